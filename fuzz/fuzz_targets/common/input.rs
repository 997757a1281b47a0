//! The fuzz input of the OTA targets, read front to back; zeros once used up.

pub struct Input<'a> {
    pub data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn byte(&mut self) -> u8 {
        let (&b, rest) = self.data.split_first().unwrap_or((&0, &[]));
        self.data = rest;
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// A length-prefixed payload (up to 1199 bytes: past the largest chunk of either
    /// exchange, and past the original's 1024-character limit).
    pub fn sized(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16()) % 1200;
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }
}
