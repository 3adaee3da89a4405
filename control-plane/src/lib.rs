//! `kwk-control-plane`: apiserver, scheduler and controllers, one subcommand per component.
//!
//! Empty until the apiserver issue lands.
