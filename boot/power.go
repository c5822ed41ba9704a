package boot

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// PowerAction reboots or powers the machine off after syncing the file
// systems. It returns only on failure; for AfterShell it does nothing.
func PowerAction(a After) error {
	var cmd int
	switch a {
	case AfterReboot:
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	case AfterPoweroff:
		cmd = unix.LINUX_REBOOT_CMD_POWER_OFF
	default:
		return nil
	}
	unix.Sync()
	if err := unix.Reboot(cmd); err != nil {
		return fmt.Errorf("%s: %w", a, err)
	}
	return nil
}
