//! The compiled validator: a strict reader of the plain JSON events kpimon receives.
//!
//! It accepts a message only when it is certain the Python validator (msgspec and streams/validation.py)
//! accepts it with the same values; everything else returns None and the message goes to the Python
//! validator, which decides (and words the dead letter). So it never rejects anything itself, and its
//! rules may be stricter than the specification's: no escapes in the strings it reads, no duplicate
//! known fields, timestamps only as `YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+HH:MM|-HH:MM)` or small integers,
//! numbers of unknown fields without exponents and at most 15 digits, nesting at most 64 levels.

pub const CLICKS: u8 = 0;
pub const SURVEYS: u8 = 1;

pub const NPS: u8 = 0;
pub const CSAT: u8 = 1;
pub const SHOWN: u8 = 0;
pub const ANSWERED: u8 = 1;
pub const DISMISSED: u8 = 2;

const MAX_DEPTH: u32 = 64;
const MAX_DIGITS: usize = 15;

/// A decoded event: the fields the engine uses (both topics), timestamps as epoch milliseconds.
#[derive(Debug, Default)]
pub struct Event<'a> {
    pub event_id: &'a str,
    pub user_id: &'a str,
    pub ts_ms: i64,
    pub typ: &'a str,
    pub signup_ms: Option<i64>,
    pub platform: Option<&'a str>,
    pub plan: Option<&'a str>,
    pub survey: u8,
    pub action: u8,
    pub score: Option<i64>,
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    fn literal(&mut self, lit: &[u8]) -> Option<()> {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            Some(())
        } else {
            None
        }
    }

    /// A string without escapes or control characters (the input is valid UTF-8 as a whole).
    fn plain_str(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'"' => {
                    let s = &self.b[start..self.i];
                    self.i += 1;
                    // Safe to unwrap-free: the whole message was checked as UTF-8, and `"` is ASCII.
                    return std::str::from_utf8(s).ok();
                }
                b'\\' => return None,
                c if c < 0x20 => return None,
                _ => self.i += 1,
            }
        }
        None
    }

    /// Any well-formed string: simple escapes and non-surrogate \u escapes.
    fn skip_str(&mut self) -> Option<()> {
        self.eat(b'"')?;
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => {
                    let c = *self.b.get(self.i + 1)?;
                    match c {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' => {
                            let hex = self.b.get(self.i + 2..self.i + 6)?;
                            let text = std::str::from_utf8(hex).ok()?;
                            if !text.bytes().all(|h| h.is_ascii_hexdigit()) {
                                return None;
                            }
                            let code = u32::from_str_radix(text, 16).ok()?;
                            if (0xD800..=0xDFFF).contains(&code) {
                                return None; // surrogates: leave their pairing rules to msgspec
                            }
                            self.i += 6;
                        }
                        _ => return None,
                    }
                }
                c if c < 0x20 => return None,
                _ => self.i += 1,
            }
        }
        None
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.i < self.b.len() && self.b[self.i].is_ascii_digit() {
            self.i += 1;
        }
        self.i - start
    }

    /// An integer as JSON writes it (no fraction, no exponent), at most MAX_DIGITS digits.
    fn int(&mut self) -> Option<i64> {
        let start = self.i;
        let negative = self.eat(b'-').is_some();
        let digits_start = self.i;
        let n = self.digits();
        if n == 0 || n > MAX_DIGITS || (n > 1 && self.b[digits_start] == b'0') {
            return None;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).ok()?;
        let value: i64 = text.parse().ok()?;
        let _ = negative;
        Some(value)
    }

    /// A number of an unknown field: JSON's grammar without an exponent, at most MAX_DIGITS digits.
    fn skip_num(&mut self) -> Option<()> {
        self.eat(b'-');
        let first = self.i;
        let n = self.digits();
        if n == 0 || (n > 1 && self.b[first] == b'0') {
            return None;
        }
        let mut total = n;
        if self.eat(b'.').is_some() {
            let f = self.digits();
            if f == 0 {
                return None;
            }
            total += f;
        }
        if total > MAX_DIGITS || matches!(self.peek(), Some(b'e' | b'E')) {
            return None;
        }
        Some(())
    }

    fn skip_value(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_str(),
            b'{' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.eat(b'}').is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    self.skip_str()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.skip_value(depth + 1)?;
                    self.ws();
                    if self.eat(b',').is_some() {
                        continue;
                    }
                    return self.eat(b'}');
                }
            }
            b'[' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    self.skip_value(depth + 1)?;
                    self.ws();
                    if self.eat(b',').is_some() {
                        continue;
                    }
                    return self.eat(b']');
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.skip_num(),
            _ => None,
        }
    }

    fn is_null(&mut self) -> bool {
        if self.peek() == Some(b'n') && self.literal(b"null").is_some() {
            return true;
        }
        false
    }

    /// An event timestamp: an RFC 3339 string with an offset, or integer epoch milliseconds.
    fn timestamp(&mut self) -> Option<i64> {
        match self.peek()? {
            b'"' => rfc3339_ms(self.plain_str()?.as_bytes()),
            b'-' | b'0'..=b'9' => self.int(),
            _ => None,
        }
    }
}

/// Characters (code points) of a string: what msgspec's length bounds count.
fn chars_within(s: &str, low: usize, high: usize) -> bool {
    if s.len() < low {
        return false;
    }
    if s.is_ascii() {
        return s.len() <= high;
    }
    let n = s.chars().count();
    low <= n && n <= high
}

fn two(b: &[u8], at: usize) -> Option<i64> {
    let (x, y) = (*b.get(at)?, *b.get(at + 1)?);
    if !x.is_ascii_digit() || !y.is_ascii_digit() {
        return None;
    }
    Some(((x - b'0') * 10 + (y - b'0')) as i64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
                29
            } else {
                28
            }
        }
    }
}

/// Epoch milliseconds of `YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM)`, floored as Python's
/// `(ts - epoch) // timedelta(milliseconds=1)`; None for anything else.
pub fn rfc3339_ms(s: &[u8]) -> Option<i64> {
    if s.len() < 20 {
        return None;
    }
    let year = two(s, 0)? * 100 + two(s, 2)?;
    if s[4] != b'-' || s[7] != b'-' || s[10] != b'T' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    let (month, day) = (two(s, 5)?, two(s, 8)?);
    let (hour, minute, second) = (two(s, 11)?, two(s, 14)?, two(s, 17)?);
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if s[i] == b'.' {
        i += 1;
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 6 {
            return None;
        }
        for &c in &s[start..i] {
            micros = micros * 10 + (c - b'0') as i64;
        }
        micros *= 10i64.pow((6 - n) as u32);
    }
    let offset_minutes = match s.get(i)? {
        b'Z' if i + 1 == s.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == s.len() && s[i + 3] == b':' => {
            let (oh, om) = (two(s, i + 1)?, two(s, i + 4)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let total = oh * 60 + om;
            if *sign == b'-' {
                -total
            } else {
                total
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + micros / 1000)
}

#[derive(PartialEq, Clone, Copy)]
enum Field {
    EventId,
    UserId,
    Ts,
    Type,
    SessionId,
    SignupTs,
    Platform,
    Plan,
    Properties,
    Survey,
    Action,
    Score,
    Comment,
    Unknown,
}

fn field_of(kind: u8, name: &str) -> Field {
    let common = match name {
        "event_id" => Field::EventId,
        "user_id" => Field::UserId,
        "ts" => Field::Ts,
        "signup_ts" => Field::SignupTs,
        "platform" => Field::Platform,
        "plan" => Field::Plan,
        _ => Field::Unknown,
    };
    if common != Field::Unknown {
        return common;
    }
    match (kind, name) {
        (CLICKS, "type") => Field::Type,
        (CLICKS, "session_id") => Field::SessionId,
        (CLICKS, "properties") => Field::Properties,
        (SURVEYS, "survey") => Field::Survey,
        (SURVEYS, "action") => Field::Action,
        (SURVEYS, "score") => Field::Score,
        (SURVEYS, "comment") => Field::Comment,
        _ => Field::Unknown,
    }
}

/// The event in `value`, when the Python validator surely decodes it to the same fields; None otherwise.
/// (Key, timestamp bounds and score rules are the caller's: they need the message key and the clock.)
pub fn decode(kind: u8, value: &[u8]) -> Option<Event<'_>> {
    std::str::from_utf8(value).ok()?;
    let mut r = Reader { b: value, i: 0 };
    let mut ev = Event::default();
    let mut seen: u32 = 0;
    r.ws();
    r.eat(b'{')?;
    r.ws();
    if r.eat(b'}').is_none() {
        loop {
            r.ws();
            let name = r.plain_str()?;
            r.ws();
            r.eat(b':')?;
            r.ws();
            let field = field_of(kind, name);
            if field != Field::Unknown {
                let flag = 1u32 << (field as u32);
                if seen & flag != 0 {
                    return None; // a repeated field: msgspec keeps the last, leave it to msgspec
                }
                seen |= flag;
            }
            match field {
                Field::EventId => ev.event_id = r.plain_str()?,
                Field::UserId => ev.user_id = r.plain_str()?,
                Field::Type => ev.typ = r.plain_str()?,
                Field::Ts => ev.ts_ms = r.timestamp()?,
                Field::SignupTs => ev.signup_ms = if r.is_null() { None } else { Some(r.timestamp()?) },
                Field::Platform => ev.platform = if r.is_null() { None } else { Some(r.plain_str()?) },
                Field::Plan => ev.plan = if r.is_null() { None } else { Some(r.plain_str()?) },
                Field::SessionId => {
                    if !r.is_null() {
                        if r.peek()? != b'"' {
                            return None;
                        }
                        r.skip_str()?;
                    }
                }
                Field::Properties => {
                    if !r.is_null() {
                        if r.peek()? != b'{' {
                            return None;
                        }
                        r.skip_value(1)?;
                    }
                }
                Field::Survey => {
                    ev.survey = match r.plain_str()? {
                        "nps" => NPS,
                        "csat" => CSAT,
                        _ => return None,
                    }
                }
                Field::Action => {
                    ev.action = match r.plain_str()? {
                        "shown" => SHOWN,
                        "answered" => ANSWERED,
                        "dismissed" => DISMISSED,
                        _ => return None,
                    }
                }
                Field::Score => ev.score = if r.is_null() { None } else { Some(r.int()?) },
                Field::Comment => {
                    if !r.is_null() && !chars_within(r.plain_str()?, 0, 2000) {
                        return None;
                    }
                }
                Field::Unknown => r.skip_value(1)?,
            }
            r.ws();
            if r.eat(b',').is_some() {
                continue;
            }
            r.eat(b'}')?;
            break;
        }
    }
    r.ws();
    if r.i != value.len() {
        return None;
    }
    let required: &[Field] = if kind == CLICKS {
        &[Field::EventId, Field::UserId, Field::Ts, Field::Type]
    } else {
        &[
            Field::EventId,
            Field::UserId,
            Field::Ts,
            Field::Survey,
            Field::Action,
        ]
    };
    for f in required {
        if seen & (1u32 << (*f as u32)) == 0 {
            return None;
        }
    }
    if !chars_within(ev.event_id, 1, 128) || !chars_within(ev.user_id, 1, 128) {
        return None;
    }
    if kind == CLICKS && !chars_within(ev.typ, 1, 64) {
        return None;
    }
    for label in [ev.platform, ev.plan].into_iter().flatten() {
        if !chars_within(label, 1, 64) {
            return None;
        }
    }
    Some(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ms(b"1970-01-01T00:00:00.0019Z"), Some(1));
        assert_eq!(rfc3339_ms(b"1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(rfc3339_ms(b"1969-12-31T23:59:59.999999Z"), Some(-1));
        assert_eq!(rfc3339_ms(b"2024-02-30T00:00:00Z"), None);
        assert_eq!(rfc3339_ms(b"2024-02-29T00:00:00z"), None);
    }

    #[test]
    fn events() {
        let ev = decode(
            CLICKS,
            br#"{"event_id":"e","user_id":"u","ts":5,"type":"t","properties":{"a":[1,2.5,"\n"]}}"#,
        )
        .unwrap();
        assert_eq!((ev.user_id, ev.ts_ms, ev.typ), ("u", 5, "t"));
        assert!(decode(CLICKS, br#"{"event_id":"e","user_id":"u","ts":5}"#).is_none());
        assert!(decode(
            CLICKS,
            br#"{"event_id":"e","user_id":"u","ts":5,"type":"t","type":"x"}"#
        )
        .is_none());
        assert!(decode(
            CLICKS,
            br#"{"event_id":"e","user_id":"u\u0041","ts":5,"type":"t"}"#
        )
        .is_none());
    }
}
