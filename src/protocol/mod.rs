//! The session protocol, once for every transport: what clients may send ([`ClientFrame`]),
//! what the server tells them ([`Notice`], [`ErrorCode`], [`CloseReason`]), and how a
//! resuming client gets what it missed ([`Resume`], [`CatchUp`]).
//!
//! The transports only decode requests into these types and encode these
//! types into their wire format: `/ws` JSON frames, Socket.IO events and acknowledgements,
//! SSE events, polling pages.

mod frames;
mod notice;
mod resume;

pub use frames::{ClientFrame, FrameError, rooms_arg};
pub use notice::{CloseReason, ErrorCode, LeftReason, Notice, RESUME_FAILED, Resync};
pub use resume::{CATCH_UP_PAGE, CatchUp, Resume};

/// Whether a transport's session loop goes on after handling something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

impl Flow {
    /// `Continue` when a write succeeded, `Stop` when it did not.
    pub fn from_sent(sent: bool) -> Flow {
        if sent { Flow::Continue } else { Flow::Stop }
    }
}
