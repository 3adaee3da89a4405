//! The cronjob controller (in progress).
pub mod schedule;
