//! A simulated PCI topology and NVMe controller for host tests of bare-nvme.
