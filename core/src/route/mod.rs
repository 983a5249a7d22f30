//! The route wire format: what two Shoal nodes say to each other.
//!
//! A route link carries frames `u32 length | u8 kind | rkyv payload` (length
//! little endian, counting the payload only). The peer is not trusted: every
//! frame's length is bounded before anything is buffered, its kind is checked,
//! and its payload is validated with rkyv's bytecheck (and every subject in it
//! with the subject rules) before any field is read. A frame that fails is an
//! error for the caller, which closes that link; nothing here panics on input.
//!
//! rkyv is built with `unaligned` so an archived payload can be read where it
//! lies in the read buffer (any offset); message subjects and payloads come
//! out as `Bytes` slices of that buffer, never copied.

mod frame;
#[cfg(test)]
mod tests;

pub use frame::*;
