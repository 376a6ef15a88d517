package virtionet

import virtiopci "github.com/rscvm/rscvm/virtio/pci"

// ConfigSize implements virtiopci.ConfigSizer: the length of
// virtio_net_config as QEMU sizes it from the offered features (8 bytes by
// default), which sizes the legacy BAR and bounds device-config reads.
func (d *Device) ConfigSize() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.configSize()
}

var _ virtiopci.ConfigSizer = (*Device)(nil)
