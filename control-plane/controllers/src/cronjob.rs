//! The cronjob controller (to be written).
