//! Control plane: the NG protocol endpoint and the call table behind it, both sans-IO.

pub mod cache;
pub mod ng;
pub mod session;
