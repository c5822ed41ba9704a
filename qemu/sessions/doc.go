// Package sessions holds the end-to-end tests of whole imaging sessions in
// the private virtual lab (package lab): the real shoal and shoal-client
// binaries in separate network namespaces on one bridge, writing to regular
// files and loop devices. It has no non-test code.
package sessions
