//! The apiserver: REST handlers and the pure engines behind them.

pub mod patch;
