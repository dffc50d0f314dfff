//! Recording I/O: the io_uring writer thread and the storage/spool side (finish, recovery,
//! retries), over a small file-system trait. The packet-side buffers are in
//! [`crate::media::record`].

pub mod disk;
pub mod store;
pub mod writer;
