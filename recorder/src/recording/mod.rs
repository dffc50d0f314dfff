//! Recording I/O: the io_uring writer thread and the storage/spool side (finish, recovery).
//! The packet-side buffers are in [`crate::media::record`].

pub mod store;
pub mod writer;
