//! Client requests typed against the body that answers them. Each request
//! struct (in [`crate::body`]) names its `Response`, so a client sends a
//! request and gets back that struct, not a [`Body`] to match on.

use crate::frame::Body;

/// A request a client sends, typed against the body the server answers it
/// with when it accepts it. A refusal (`Body::Error`, `Body::Conflict`) can
/// answer any request and is the caller's to turn into an error first; any
/// other body than `Response` is a protocol mismatch, and `try_from` hands
/// it back unchanged.
pub trait Request: Into<Body> {
    type Response: TryFrom<Body, Error = Body>;
}
