//! [`Deframer`]: reassembles frames from a stream in a fixed buffer, refusing a bad
//! header before buffering its body.

use core::fmt;

use super::{DecodeError, HEADER_LEN, MAX_BODY, MAX_FRAME};

/// Reassembles frames from a byte stream, one at a time, in a fixed buffer.
///
/// Feed it what the socket gave; when [`frame`](Self::frame) returns a body, decode it,
/// then [`consume`](Self::consume) it and feed the rest.
pub struct Deframer {
    /// Header then body of the frame being read.
    buf: [u8; MAX_FRAME],
    /// Bytes of `buf` filled; never more than `MAX_FRAME`.
    len: usize,
}

impl fmt::Debug for Deframer {
    // The buffer itself is noise in a log line; its fill level is what matters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deframer")
            .field("buffered", &self.len)
            .field("wanted", &self.wanted())
            .finish()
    }
}

impl Default for Deframer {
    fn default() -> Self {
        Self::new()
    }
}

/// The body length a header declares, if acceptable.
fn declared_body_len(header: [u8; HEADER_LEN]) -> Result<usize, DecodeError> {
    match usize::from(u16::from_be_bytes(header)) {
        n @ 1..=MAX_BODY => Ok(n),
        n => Err(DecodeError::BadLength(n)),
    }
}

impl Deframer {
    /// An empty deframer.
    pub const fn new() -> Self {
        Deframer {
            buf: [0; MAX_FRAME],
            len: 0,
        }
    }

    /// Bytes wanted in `buf` for the current step: the header, then the whole frame.
    fn wanted(&self) -> Result<usize, DecodeError> {
        match self.buf.first_chunk::<HEADER_LEN>() {
            Some(header) if self.len >= HEADER_LEN => Ok(HEADER_LEN + declared_body_len(*header)?),
            _ => Ok(HEADER_LEN),
        }
    }

    /// Takes bytes from `data` until one whole frame is buffered (or `data` ends);
    /// returns how many bytes it took. Returns `Err(BadLength)` as soon as a header
    /// declares an oversized or empty body, before buffering it; the stream is then
    /// unusable and the link must be closed.
    ///
    /// After an error every further call fails the same way until [`reset`](Self::reset).
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, DecodeError> {
        let mut taken = 0;
        loop {
            let wanted = self.wanted()?;
            let rest = data.get(taken..).unwrap_or_default();
            let free = self.buf.get_mut(self.len..wanted).unwrap_or_default();
            let n = free.len().min(rest.len());
            if n == 0 {
                // Frame complete, or `data` used up.
                return Ok(taken);
            }
            free.iter_mut().zip(rest).for_each(|(d, s)| *d = *s);
            self.len += n;
            taken += n;
        }
    }

    /// The body of the buffered frame, once complete.
    pub fn frame(&self) -> Option<&[u8]> {
        let wanted = self.wanted().ok()?;
        if self.len == wanted && wanted > HEADER_LEN {
            self.buf.get(HEADER_LEN..wanted)
        } else {
            None
        }
    }

    /// Drops the buffered frame so the next one can be read. Does nothing while the
    /// frame is incomplete, so calling it early cannot desynchronise the stream.
    pub fn consume(&mut self) {
        if self.frame().is_some() {
            self.len = 0;
        }
    }

    /// Forgets everything (new link).
    pub fn reset(&mut self) {
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::fixtures::{fixtures, DELIVER, JOIN_ACCEPT, PUBLISH};
    use crate::link::Frame;

    #[test]
    fn deframer_reassembles_byte_by_byte() {
        let mut d = Deframer::new();
        for (frame, bytes) in fixtures() {
            for (i, b) in bytes.iter().enumerate() {
                assert_eq!(d.frame(), None);
                assert_eq!(d.feed(core::slice::from_ref(b)), Ok(1), "byte {i}");
            }
            assert_eq!(d.frame().map(Frame::decode), Some(Ok(frame)));
            assert_eq!(
                d.feed(&[0x00]),
                Ok(0),
                "a complete frame takes no more bytes"
            );
            d.consume();
            assert_eq!(d.frame(), None);
        }
    }

    #[test]
    fn deframer_takes_one_frame_at_a_time() {
        let mut stream = [0; 64];
        stream[..JOIN_ACCEPT.len()].copy_from_slice(JOIN_ACCEPT);
        stream[JOIN_ACCEPT.len()..][..DELIVER.len()].copy_from_slice(DELIVER);
        let stream = &stream[..JOIN_ACCEPT.len() + DELIVER.len()];
        let mut d = Deframer::default();
        assert_eq!(d.feed(stream), Ok(JOIN_ACCEPT.len()));
        assert_eq!(d.frame(), Some(&JOIN_ACCEPT[HEADER_LEN..]));
        assert_eq!(d.feed(&stream[JOIN_ACCEPT.len()..]), Ok(0));
        d.consume();
        assert_eq!(d.feed(&stream[JOIN_ACCEPT.len()..]), Ok(DELIVER.len()));
        assert_eq!(d.frame(), Some(&DELIVER[HEADER_LEN..]));
    }

    #[test]
    fn deframer_refuses_bad_headers_before_buffering() {
        for header in [[0x00, 0x00], [0x05, 0x01], [0xff, 0xff]] {
            let len = usize::from(u16::from_be_bytes(header));
            let mut d = Deframer::new();
            assert_eq!(d.feed(&header[..1]), Ok(1));
            assert_eq!(
                d.feed(&[header[1], 0x20, 0x20]),
                Err(DecodeError::BadLength(len))
            );
            assert_eq!(d.frame(), None);
            d.consume();
            assert_eq!(d.feed(&[0x20]), Err(DecodeError::BadLength(len)), "sticky");
            d.reset();
            assert_eq!(d.feed(&[0x00, 0x01, 0x20]), Ok(3));
            assert_eq!(d.frame(), Some(&[0x20][..]));
        }
    }

    #[test]
    fn deframer_reset_drops_a_partial_frame() {
        let mut d = Deframer::new();
        assert_eq!(d.feed(&PUBLISH[..10]), Ok(10));
        d.consume();
        assert_eq!(
            d.feed(&PUBLISH[10..]),
            Ok(PUBLISH.len() - 10),
            "consume kept it"
        );
        assert!(d.frame().is_some());
        d.reset();
        assert_eq!(d.frame(), None);
        assert_eq!(d.feed(&[0x00, 0x01, 0x21]), Ok(3));
        assert_eq!(d.frame().map(Frame::decode), Some(Ok(Frame::KeepAliveAck)));
    }
}
