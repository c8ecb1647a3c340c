//! Reading a few fields out of a large JSON document without parsing the rest.
//!
//! An AdmissionReview for a Secret is mostly what the webhook never reads: `oldObject`,
//! `managedFields`, `userInfo`, `options`. [`Reader`] walks the members of the objects that hold
//! what it reads and hands each value it wants to serde_json, which parses and validates it as
//! usual. Every other value is skipped structurally, as simdjson's On-Demand API and sonic-rs's
//! lazy reads do: strings must end and hold no control character, brackets must balance and
//! match, nesting stops at 128 levels (serde_json's limit), but the grammar between them (commas,
//! colons, numbers, literals) and the UTF-8 of skipped strings are not checked. The API server
//! writes these documents with Go's encoding/json, so a body that is not JSON is a client that is
//! not the API server; such a body still never makes the reader panic or loop, and any damage
//! it notices is an error that names the byte.
//!
//! The skip looks at eight bytes at a time (SWAR) for the next byte that matters: a quote, a
//! backslash or a control character inside a string; a quote or a bracket outside one.

use std::borrow::Cow;
use std::fmt;

/// What is wrong with a document, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// Byte offset into the document.
    pub at: usize,
    pub what: Cow<'static, str>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

impl std::error::Error for Error {}

fn err<T>(at: usize, what: impl Into<Cow<'static, str>>) -> Result<T, Error> {
    Err(Error {
        at,
        what: what.into(),
    })
}

/// A string borrowed from the document where it can be ([`Reader::text`]), for map keys too.
pub struct Text<'a>(pub Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// serde_json's own nesting limit.
const MAX_DEPTH: u32 = 128;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` that is zero. A byte above a zero byte may be flagged
/// falsely (the borrow), never one below, so the lowest flag is always a true one.
#[inline]
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// The high bit of each byte of `x` below `n` (`n` at most 128), with the same caveat.
#[inline]
fn bytes_below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS
}

#[inline]
fn splat(b: u8) -> u64 {
    ONES * u64::from(b)
}

/// Eight bytes of `b` from `i`, if there are eight.
#[inline]
fn word(b: &[u8], i: usize) -> Option<u64> {
    let chunk: [u8; 8] = b.get(i..i.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(chunk))
}

/// The index of the first byte from `i` that `special` flags, or of the first of the last
/// fewer than eight bytes, where the caller goes on a byte at a time.
#[inline]
fn scan(b: &[u8], mut i: usize, special: impl Fn(u64) -> u64) -> usize {
    while let Some(x) = word(b, i) {
        let m = special(x);
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i
}

/// The index just past the string whose opening quote is at `start - 1`.
fn string_end(b: &[u8], start: usize) -> Result<usize, Error> {
    let mut i = start;
    loop {
        i = scan(b, i, |x| {
            zero_bytes(x ^ splat(b'"')) | zero_bytes(x ^ splat(b'\\')) | bytes_below(x, 0x20)
        });
        match b.get(i) {
            None => return err(start - 1, "unterminated string"),
            Some(b'"') => return Ok(i + 1),
            // Whatever follows a backslash is not the end: `\"`, `\\`, `\u0022`.
            Some(b'\\') => i += 2,
            Some(c) if *c < 0x20 => return err(i, "control character in a string"),
            Some(_) => i += 1,
        }
    }
}

/// The index just past the object or array whose opening bracket is at `start`.
fn container_end(b: &[u8], start: usize) -> Result<usize, Error> {
    // One bit per open level: 1 for an object, 0 for an array.
    let mut stack: u128 = 0;
    let mut depth: u32 = 0;
    let mut i = start;
    loop {
        // `[` and `]` are `{` and `}` with bit 5 clear.
        i = scan(b, i, |x| {
            let y = x | splat(0x20);
            zero_bytes(x ^ splat(b'"')) | zero_bytes(y ^ splat(b'{')) | zero_bytes(y ^ splat(b'}'))
        });
        match b.get(i) {
            None => return err(start, "unterminated object or array"),
            Some(b'"') => i = string_end(b, i + 1)?,
            Some(&c @ (b'{' | b'[')) => {
                if depth == MAX_DEPTH {
                    return err(i, "nested too deeply");
                }
                stack = (stack << 1) | u128::from(c == b'{');
                depth += 1;
                i += 1;
            }
            Some(&c @ (b'}' | b']')) => {
                if depth == 0 || (stack & 1 == 1) != (c == b'}') {
                    return err(i, "mismatched bracket");
                }
                stack >>= 1;
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            Some(_) => i += 1,
        }
    }
}

/// The index just past the number or literal at `start`: up to the next delimiter.
fn scalar_end(b: &[u8], start: usize) -> Result<usize, Error> {
    let Some(b'-' | b'0'..=b'9' | b't' | b'f' | b'n') = b.get(start) else {
        return err(start, "expected a value");
    };
    let rest = b.get(start..).unwrap_or_default();
    let len = rest
        .iter()
        .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
        .unwrap_or(rest.len());
    Ok(start + len)
}

/// The key of an object member.
#[derive(Clone, Debug)]
pub enum Key<'a> {
    /// As written, without the quotes: it has no escapes.
    Raw(&'a [u8]),
    /// Written with escapes, decoded (only a client that is not Go's writes `"\u0075id"`).
    Decoded(String),
}

impl Key<'_> {
    /// Whether this key is `name`.
    pub fn is(&self, name: &str) -> bool {
        match self {
            Key::Raw(raw) => *raw == name.as_bytes(),
            Key::Decoded(key) => key == name,
        }
    }
}

/// A cursor over one JSON document.
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Reader { b, i: 0 }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The whole document is one value: nothing but whitespace may follow it.
    pub fn end(mut self) -> Result<(), Error> {
        self.ws();
        if self.i < self.b.len() {
            return err(self.i, "trailing characters");
        }
        Ok(())
    }

    /// The raw bytes of the next value, skipped structurally.
    pub fn raw(&mut self) -> Result<&'a [u8], Error> {
        self.ws();
        let start = self.i;
        let end = match self.b.get(start) {
            None => return err(start, "expected a value, found the end"),
            Some(b'"') => string_end(self.b, start + 1)?,
            Some(b'{' | b'[') => container_end(self.b, start)?,
            Some(_) => scalar_end(self.b, start)?,
        };
        self.i = end;
        Ok(&self.b[start..end])
    }

    /// Skips the next value.
    pub fn skip(&mut self) -> Result<(), Error> {
        self.raw().map(|_| ())
    }

    /// Whether the next value is `null`; if it is, it is consumed.
    pub fn null(&mut self) -> bool {
        self.ws();
        let rest = &self.b[self.i..];
        let is_null = rest.starts_with(b"null")
            && !rest
                .get(4)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
        if is_null {
            self.i += 4;
        }
        is_null
    }

    /// Where the reader is: the next value's first byte, once whitespace is skipped.
    pub fn at(&mut self) -> usize {
        self.ws();
        self.i
    }

    /// The next value, parsed and validated by serde_json where it stands (not scanned first).
    pub fn read<T: serde::Deserialize<'a>>(&mut self) -> Result<T, Error> {
        let at = self.at();
        let rest = self.b.get(at..).unwrap_or_default();
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<T>();
        match values.next() {
            Some(Ok(v)) => {
                self.i = at + values.byte_offset();
                Ok(v)
            }
            Some(Err(e)) => Err(Error {
                at,
                what: without_position(&e).into(),
            }),
            None => err(at, "expected a value, found the end"),
        }
    }

    /// The next value as a string, borrowed from the document unless it holds escapes, as a
    /// `#[serde(borrow)] Cow<str>` field reads it (serde's plain `Cow<str>` always copies).
    pub fn text(&mut self) -> Result<Cow<'a, str>, Error> {
        self.read::<Text<'a>>().map(|t| t.0)
    }

    /// [`Reader::read`] into a field that may be given once, as serde's derived structs have it.
    pub fn read_once<T: serde::Deserialize<'a>>(
        &mut self,
        slot: &mut Option<T>,
        name: &'static str,
    ) -> Result<(), Error> {
        self.once(slot, name, |r| r.read())
    }

    /// The next value, read by `read`, into a field that may be given once.
    pub fn once<T>(
        &mut self,
        slot: &mut Option<T>,
        name: &'static str,
        read: impl FnOnce(&mut Self) -> Result<T, Error>,
    ) -> Result<(), Error> {
        let at = self.at();
        if slot.is_some() {
            return duplicate(at, name);
        }
        *slot = Some(read(self)?);
        Ok(())
    }

    /// `None` for `null`, else the next value as `read` reads it (serde's `Option`).
    pub fn nullable<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        if self.null() {
            return Ok(None);
        }
        read(self).map(Some)
    }

    /// Calls `member` for each member of the object that comes next, with the reader at the
    /// member's value; a value `member` does not consume is skipped. `member` may stop the walk
    /// after any member ([`Walk::Stop`]); then the reader is left just past that member's
    /// value, for [`Reader::resume`], and the result is false. True when the object ended.
    pub fn object(
        &mut self,
        member: impl FnMut(&mut Self, Key<'a>) -> Result<Walk, Error>,
    ) -> Result<bool, Error> {
        self.ws();
        if self.b.get(self.i) != Some(&b'{') {
            return err(self.i, "expected an object");
        }
        self.i += 1;
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(true);
        }
        self.members(member)
    }

    /// Goes on with an object walk that [`Walk::Stop`] ended early.
    pub fn resume(
        &mut self,
        member: impl FnMut(&mut Self, Key<'a>) -> Result<Walk, Error>,
    ) -> Result<bool, Error> {
        match self.after_member()? {
            true => Ok(true),
            false => self.members(member),
        }
    }

    /// After a member's value: a comma (false) or the end of the object (true).
    fn after_member(&mut self) -> Result<bool, Error> {
        self.ws();
        match self.b.get(self.i) {
            Some(b',') => {
                self.i += 1;
                Ok(false)
            }
            Some(b'}') => {
                self.i += 1;
                Ok(true)
            }
            _ => err(self.i, "expected ',' or '}'"),
        }
    }

    fn members(
        &mut self,
        mut member: impl FnMut(&mut Self, Key<'a>) -> Result<Walk, Error>,
    ) -> Result<bool, Error> {
        loop {
            self.ws();
            if self.b.get(self.i) != Some(&b'"') {
                return err(self.i, "expected a key");
            }
            let start = self.i + 1;
            let end = string_end(self.b, start)?;
            let raw = &self.b[start..end - 1];
            let key = if raw.contains(&b'\\') {
                match serde_json::from_slice(&self.b[start - 1..end]) {
                    Ok(key) => Key::Decoded(key),
                    Err(e) => return err(start - 1, format!("key: {}", without_position(&e))),
                }
            } else {
                Key::Raw(raw)
            };
            self.i = end;
            self.ws();
            if self.b.get(self.i) != Some(&b':') {
                return err(self.i, "expected ':'");
            }
            self.i += 1;
            self.ws();
            let at = self.i;
            let walk = member(self, key)?;
            if self.i == at {
                self.skip()?;
            }
            if walk == Walk::Stop {
                return Ok(false);
            }
            if self.after_member()? {
                return Ok(true);
            }
        }
    }
}

/// Whether an object walk goes on after a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    Next,
    Stop,
}

/// serde_json's message without its position, which counts from the value, not the document.
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(s) => s.to_string(),
        None => text,
    }
}

/// A field given twice: an error, as serde's derived structs have it.
fn duplicate<T>(at: usize, name: &'static str) -> Result<T, Error> {
    err(at, format!("duplicate field `{name}`"))
}

/// A required field that is absent, in serde's words.
pub fn missing(at: usize, name: &'static str) -> Error {
    Error {
        at,
        what: format!("missing field `{name}`").into(),
    }
}

#[cfg(test)]
mod tests;
