//! The user-state encoding of streams/userstate.py (`UserState.to_bytes`: msgspec's msgpack of `_Wire`,
//! format 2), written here so the core hands back a changed state's changelog bytes with the state and
//! Python does not encode it again. Byte-equal to msgspec's output: the smallest msgpack form of every
//! integer, string, byte string, array and map header, as msgspec writes them (the differential test
//! compares these bytes with `to_bytes` on every batch it generates).

use crate::bits::U256;

/// streams/userstate.py's _FORMAT.
const FORMAT: i64 = 2;

pub struct Writer {
    pub out: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer {
            out: Vec::with_capacity(128),
        }
    }

    pub fn int(&mut self, v: i64) {
        let out = &mut self.out;
        if v >= 0 {
            if v < 128 {
                out.push(v as u8);
            } else if v <= 0xff {
                out.extend_from_slice(&[0xcc, v as u8]);
            } else if v <= 0xffff {
                out.push(0xcd);
                out.extend_from_slice(&(v as u16).to_be_bytes());
            } else if v <= 0xffff_ffff {
                out.push(0xce);
                out.extend_from_slice(&(v as u32).to_be_bytes());
            } else {
                out.push(0xcf);
                out.extend_from_slice(&(v as u64).to_be_bytes());
            }
        } else if v >= -32 {
            out.push(v as i8 as u8);
        } else if v >= -128 {
            out.extend_from_slice(&[0xd0, v as i8 as u8]);
        } else if v >= -32768 {
            out.push(0xd1);
            out.extend_from_slice(&(v as i16).to_be_bytes());
        } else if v >= -(1 << 31) {
            out.push(0xd2);
            out.extend_from_slice(&(v as i32).to_be_bytes());
        } else {
            out.push(0xd3);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    pub fn opt_int(&mut self, v: Option<i64>) {
        match v {
            Some(v) => self.int(v),
            None => self.out.push(0xc0),
        }
    }

    pub fn bool(&mut self, v: bool) {
        self.out.push(if v { 0xc3 } else { 0xc2 });
    }

    fn header(&mut self, len: usize, fix: u8, fix_max: usize, codes: [u8; 3]) {
        let out = &mut self.out;
        if len < fix_max {
            out.push(fix | len as u8);
        } else if codes[0] != 0 && len <= 0xff {
            out.extend_from_slice(&[codes[0], len as u8]);
        } else if len <= 0xffff {
            out.push(codes[1]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(codes[2]);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }

    pub fn str(&mut self, s: &str) {
        self.header(s.len(), 0xa0, 32, [0xd9, 0xda, 0xdb]);
        self.out.extend_from_slice(s.as_bytes());
    }

    pub fn bin(&mut self, b: &[u8]) {
        // No fix form for bytes: bin8 from length 0.
        self.header(b.len(), 0, 0, [0xc4, 0xc5, 0xc6]);
        self.out.extend_from_slice(b);
    }

    pub fn array(&mut self, len: usize) {
        self.header(len, 0x90, 16, [0, 0xdc, 0xdd]);
    }

    pub fn map(&mut self, len: usize) {
        self.header(len, 0x80, 16, [0, 0xde, 0xdf]);
    }

    /// activity.to_bytes: the bitmap's minimal little-endian bytes (none for zero).
    pub fn bitmap(&mut self, bits: U256) {
        let mut bytes = [0u8; 32];
        for (i, word) in bits.0.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
        let len = (bits.bit_length() as usize).div_ceil(8);
        self.bin(&bytes[..len]);
    }
}

/// One survey fact as the state stores it: (day, survey, action, score or -1, platform, plan, stage, ms).
pub struct WireFact<'a> {
    pub event_id: &'a str,
    pub day: i64,
    pub survey: &'a str,
    pub action: &'a str,
    pub score: i64,
    pub names: [&'a str; 3],
    pub ms: i64,
}

/// The fields of a state, in `_Wire`'s order.
pub struct WireState<'a> {
    pub base: i64,
    /// (dimension code, segment value, bitmap) in the state's dict order.
    pub segments: Vec<(u8, &'a str, U256)>,
    pub explicit_new: U256,
    pub first_active: Option<i64>,
    pub first_active_unsigned: bool,
    pub first_seen: Option<i64>,
    pub surveys: Vec<WireFact<'a>>,
    pub last_seen: Option<i64>,
    pub partition: i64,
}

/// `UserState.to_bytes` of the state.
pub fn encode(state: &WireState<'_>) -> Vec<u8> {
    let mut w = Writer::new();
    w.array(10);
    w.int(FORMAT);
    w.int(state.base);
    w.array(state.segments.len());
    for (code, value, bits) in &state.segments {
        w.array(3);
        w.int(*code as i64);
        w.str(value);
        w.bitmap(*bits);
    }
    w.bitmap(state.explicit_new);
    w.opt_int(state.first_active);
    w.bool(state.first_active_unsigned);
    w.opt_int(state.first_seen);
    w.map(state.surveys.len());
    for fact in &state.surveys {
        w.str(fact.event_id);
        w.array(8);
        w.int(fact.day);
        w.str(fact.survey);
        w.str(fact.action);
        w.int(fact.score);
        for name in fact.names {
            w.str(name);
        }
        w.int(fact.ms);
    }
    w.opt_int(state.last_seen);
    w.int(state.partition);
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(v: i64) -> Vec<u8> {
        let mut w = Writer::new();
        w.int(v);
        w.out
    }

    #[test]
    fn integers_take_msgspecs_smallest_forms() {
        // Expected bytes from msgspec.msgpack.encode.
        assert_eq!(int(127), [0x7f]);
        assert_eq!(int(128), [0xcc, 0x80]);
        assert_eq!(int(256), [0xcd, 0x01, 0x00]);
        assert_eq!(int(65536), [0xce, 0, 1, 0, 0]);
        assert_eq!(int(1 << 32), [0xcf, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(int(-1), [0xff]);
        assert_eq!(int(-33), [0xd0, 0xdf]);
        assert_eq!(int(-129), [0xd1, 0xff, 0x7f]);
        assert_eq!(int(-32769), [0xd2, 0xff, 0xff, 0x7f, 0xff]);
    }

    #[test]
    fn headers_take_msgspecs_forms() {
        let mut w = Writer::new();
        w.bin(b"");
        w.str(&"a".repeat(32));
        w.array(16);
        w.map(15);
        assert_eq!(&w.out[..2], [0xc4, 0x00]);
        assert_eq!(&w.out[2..4], [0xd9, 32]);
        assert_eq!(&w.out[36..], [0xdc, 0x00, 0x10, 0x8f]);
    }
}
