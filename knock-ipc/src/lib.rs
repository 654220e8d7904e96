//! The wire protocol between knockd and knockctl.
