//go:build !linux

package lab

import "errors"

// doInNS needs Linux network namespaces.
func doInNS(ns string, fn func() error) error {
	return errors.New("network namespaces need Linux")
}
