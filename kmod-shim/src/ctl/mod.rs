//! The control channel of the secfs service: vmd pushes keys, policies and
//! GuardPoints to one secfs process through ioctls on a control node that
//! secfs itself serves (a one-file FUSE filesystem under the runtime
//! directory). See [`proto`] for the wire format, [`service`] for what
//! secfs does with requests and who may send them, and [`client`] for the
//! vmd side.

pub mod client;
pub mod node;
pub mod proto;
pub mod service;
