//! SIP messages, transactions and dialogs, sans-IO.

pub mod framing;
pub mod message;
