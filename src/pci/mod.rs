//! PCI: configuration access, enumeration through bridges, BAR placement and
//! PCI Express slot monitoring.
//!
//! Everything read from configuration space is untrusted: every walk is
//! bounded, every pointer checked before it is followed, every size validated
//! before it is used.

pub mod access;
pub mod assign;
pub mod bar;
pub mod capability;
pub mod config;
pub mod dpc;
pub mod enumerate;
pub mod hotplug;
pub mod link;
pub mod placement;
pub mod slot;
pub mod window;
