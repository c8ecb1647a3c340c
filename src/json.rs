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
//! An object or array, or a long string, is skipped 64 bytes at a time as simdjson's first
//! stage does it: a bit per byte for quotes, backslashes, brackets and control characters (SSE2
//! compares through `wide`), which bytes backslashes escape, which are inside strings (a prefix
//! XOR of the quotes), and then only the brackets outside strings are looked at one by one.
//! The last bytes of a document, and short strings, are looked at eight bytes at a time (SWAR)
//! for the next byte that matters. A backslash escapes the next byte wherever it stands (outside
//! a string that is damage the skip does not report), so the answer never depends on where the
//! blocks fall; `src/json/tests.rs` holds the blocks to a skip written a byte at a time.

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
    string_rest(b, start, start - 1)
}

/// A string is looked at a word at a time for this many bytes, then by [`Block`]s: most strings
/// (keys, names) end before, and a block costs more than a few words.
const SHORT_STRING: usize = 24;

/// The index just past the string that goes on at `i` (its opening quote at `quote`).
fn string_rest(b: &[u8], i: usize, quote: usize) -> Result<usize, Error> {
    let i = match string_words(b, i, quote, i.saturating_add(SHORT_STRING))? {
        Ok(end) => return Ok(end),
        Err(i) => i,
    };
    let i = match string_blocks(b, i)? {
        Ok(end) => return Ok(end),
        Err(i) => i,
    };
    match string_words(b, i, quote, usize::MAX)? {
        Ok(end) => Ok(end),
        Err(_) => err(quote, "unterminated string"),
    }
}

/// Inside a string from `i`, a word at a time: `Ok(Ok(end))` just past its closing quote, or
/// `Ok(Err(at))` once `limit` is passed.
fn string_words(
    b: &[u8],
    mut i: usize,
    quote: usize,
    limit: usize,
) -> Result<Result<usize, usize>, Error> {
    while i < limit {
        i = scan(b, i, |x| {
            zero_bytes(x ^ splat(b'"')) | zero_bytes(x ^ splat(b'\\')) | bytes_below(x, 0x20)
        });
        match b.get(i) {
            None => return err(quote, "unterminated string"),
            Some(b'"') => return Ok(Ok(i + 1)),
            // Whatever follows a backslash is not the end: `\"`, `\\`, `\u0022`.
            Some(b'\\') if escape_ok(b, i) => i += 2,
            Some(b'\\') => return err(i, "invalid escape in a string"),
            Some(c) if *c < 0x20 => return err(i, "control character in a string"),
            Some(_) => i += 1,
        }
    }
    Ok(Err(i))
}

/// Inside a string from `i`, a block at a time: `Ok(Ok(end))` just past its closing quote, or
/// `Ok(Err(at))` where fewer than 64 bytes are left.
fn string_blocks(b: &[u8], mut i: usize) -> Result<Result<usize, usize>, Error> {
    let mut escape = Escapes::default();
    while let Some(block) = Block::at(b, i) {
        let escaped = escape.next(block.backslash);
        let quotes = block.quote & !escaped;
        // Bytes before the closing quote (all of them if it is not in this block).
        let before = quotes.wrapping_sub(1) & !quotes;
        if let Some((_, e)) = damage(b, i, &block, escaped, before) {
            return Err(e);
        }
        if quotes != 0 {
            return Ok(Ok(i + quotes.trailing_zeros() as usize + 1));
        }
        i += 64;
    }
    // A backslash that ended the last block: the tail starts with it, to see what it escapes.
    Ok(Err(i - escape.pending()))
}

/// Whether the escape whose backslash is at `at` is one JSON has: `\"` `\\` `\/` `\b` `\f` `\n`
/// `\r` `\t`, or `\u` and four hex digits. A backslash at the very end is left to the
/// unterminated string it is in.
fn escape_ok(b: &[u8], at: usize) -> bool {
    match b.get(at + 1) {
        None | Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => true,
        Some(b'u') => b
            .get(at + 2..at + 6)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)),
        Some(_) => false,
    }
}

/// The first damage in a block among the bytes `within` strings: a control character, or an
/// escape JSON does not have (reported at its backslash). With the bit it is at, to order it
/// against the brackets.
fn damage(b: &[u8], i: usize, block: &Block, escaped: u64, within: u64) -> Option<(u32, Error)> {
    let control = block.control & !escaped & within;
    let first_control = if control == 0 {
        64
    } else {
        control.trailing_zeros()
    };
    let before_control = 1u64.checked_shl(first_control).map_or(!0, |bit| bit - 1);
    // An escaped quote or backslash is always right; the other escapes are few, each looked at.
    let mut escapes = escaped & within & before_control & !(block.quote | block.backslash);
    while escapes != 0 {
        let k = escapes.trailing_zeros();
        let at = (i + k as usize).saturating_sub(1);
        if !escape_ok(b, at) {
            return Some((
                k,
                Error {
                    at,
                    what: "invalid escape in a string".into(),
                },
            ));
        }
        escapes &= escapes - 1;
    }
    (control != 0).then(|| {
        let at = i + first_control as usize;
        (
            first_control,
            Error {
                at,
                what: "control character in a string".into(),
            },
        )
    })
}

/// Open objects and arrays, innermost last.
struct Nest {
    /// One bit per open level: 1 for an object, 0 for an array.
    stack: u128,
    depth: u32,
}

impl Nest {
    fn open(&mut self, at: usize, object: bool) -> Result<(), Error> {
        if self.depth == MAX_DEPTH {
            return err(at, "nested too deeply");
        }
        self.stack = (self.stack << 1) | u128::from(object);
        self.depth += 1;
        Ok(())
    }

    /// Closes the innermost level; true when none is left open.
    fn close(&mut self, at: usize, object: bool) -> Result<bool, Error> {
        if self.depth == 0 || (self.stack & 1 == 1) != object {
            return err(at, "mismatched bracket");
        }
        self.stack >>= 1;
        self.depth -= 1;
        Ok(self.depth == 0)
    }
}

/// The index just past the object or array whose opening bracket is at `start`.
fn container_end(b: &[u8], start: usize) -> Result<usize, Error> {
    let mut nest = Nest { stack: 0, depth: 0 };
    // 64 bytes at a time while there are 64, then a word at a time.
    let mut i = start;
    let mut escape = Escapes::default();
    // All ones while inside a string, and where that string opened.
    let mut in_string = 0u64;
    let mut quote = 0;
    while let Some(block) = Block::at(b, i) {
        let escaped = escape.next(block.backslash);
        let quotes = block.quote & !escaped;
        let inside = prefix_xor(quotes) ^ in_string;
        if quotes != 0 && inside >> 63 == 1 {
            quote = i + (63 - (quotes & inside).leading_zeros()) as usize;
        }
        in_string = 0u64.wrapping_sub(inside >> 63);
        let bad = damage(b, i, &block, escaped, inside);
        // Brackets in order, up to the first damage: what comes first is what counts.
        let first_bad = bad.as_ref().map_or(64, |(k, _)| *k);
        let mut brackets = (block.open | block.close) & !inside & !escaped;
        while brackets != 0 {
            let k = brackets.trailing_zeros();
            if k > first_bad {
                break;
            }
            let bit = 1u64 << k;
            let object = block.curly & bit != 0;
            if block.open & bit != 0 {
                nest.open(i + k as usize, object)?;
            } else if nest.close(i + k as usize, object)? {
                return Ok(i + k as usize + 1);
            }
            brackets &= brackets - 1;
        }
        if let Some((_, e)) = bad {
            return Err(e);
        }
        i += 64;
    }
    // A backslash that ended the last block: the tail starts with it, to see what it escapes.
    i -= escape.pending();
    if in_string != 0 {
        i = string_rest(b, i, quote)?;
    }
    container_tail(b, start, i, nest)
}

/// [`container_end`] a word at a time from `i`, outside any string, with `nest` open.
fn container_tail(b: &[u8], start: usize, mut i: usize, mut nest: Nest) -> Result<usize, Error> {
    loop {
        // `[` and `]` are `{` and `}` with bit 5 clear.
        i = scan(b, i, |x| {
            let y = x | splat(0x20);
            zero_bytes(x ^ splat(b'"'))
                | zero_bytes(x ^ splat(b'\\'))
                | zero_bytes(y ^ splat(b'{'))
                | zero_bytes(y ^ splat(b'}'))
        });
        match b.get(i) {
            None => return err(start, "unterminated object or array"),
            Some(b'"') => i = string_end(b, i + 1)?,
            // Not JSON outside a string, but escaping as the blocks see it: the same whatever
            // the alignment.
            Some(b'\\') => i += 2,
            Some(&c @ (b'{' | b'[')) => {
                nest.open(i, c == b'{')?;
                i += 1;
            }
            Some(&c @ (b'}' | b']')) => {
                if nest.close(i, c == b'}')? {
                    return Ok(i + 1);
                }
                i += 1;
            }
            Some(_) => i += 1,
        }
    }
}

/// The bytes of a 64-byte block that matter to a skip, one bit each (bit k for byte k), found
/// sixteen bytes at a time: a compare of all sixteen and the high bit of each (`pcmpeqb`,
/// `pmovmskb` with SSE2).
#[derive(Debug, Default, PartialEq)]
struct Block {
    quote: u64,
    backslash: u64,
    /// Below 0x20: damage inside a string.
    control: u64,
    /// `{` or `[`.
    open: u64,
    /// `}` or `]`.
    close: u64,
    /// Which of the brackets are `{` or `}`.
    curly: u64,
}

impl Block {
    /// The block of the 64 bytes from `i`, if there are 64.
    #[inline]
    fn at(b: &[u8], i: usize) -> Option<Block> {
        use wide::u8x16;
        let bytes = b.get(i..i.checked_add(64)?)?;
        let (chunks, _) = bytes.as_chunks::<16>();
        let mut block = Block::default();
        let bits = |v: u8x16| u64::from(v.to_bitmask());
        for (k, chunk) in chunks.iter().enumerate() {
            let x = u8x16::new(*chunk);
            // `[` and `]` are `{` and `}` with bit 5 clear.
            let y = x | u8x16::splat(0x20);
            let open = bits(y.simd_eq(u8x16::splat(b'{')));
            let close = bits(y.simd_eq(u8x16::splat(b'}')));
            let shift = 16 * k;
            block.quote |= bits(x.simd_eq(u8x16::splat(b'"'))) << shift;
            block.backslash |= bits(x.simd_eq(u8x16::splat(b'\\'))) << shift;
            block.control |= bits(x.simd_lt(u8x16::splat(0x20))) << shift;
            block.open |= open << shift;
            block.close |= close << shift;
            block.curly |= (bits(x.simd_eq(y)) & (open | close)) << shift;
        }
        Some(block)
    }
}

/// Each bit set from the lowest up to a set bit (inclusive), cleared after the next: with a
/// bit per quote, the bytes inside strings (the opening quote in, the closing one out).
#[inline]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// Which bytes a backslash escapes, block after block: in a run of backslashes each escapes
/// the next, so a byte after an odd run is escaped and one after an even run is not. The
/// method is simdjson's (its `json_escape_scanner`): a subtraction finds where each run ends.
#[derive(Default)]
struct Escapes {
    /// 1 when the last block ended with a backslash that escapes the next block's first byte.
    carry: u64,
}

impl Escapes {
    const ODD: u64 = 0xaaaa_aaaa_aaaa_aaaa;

    /// The escaped bytes of the next block, given its backslashes.
    #[inline]
    fn next(&mut self, backslash: u64) -> u64 {
        let carried = self.carry;
        if backslash == 0 {
            self.carry = 0;
            return carried;
        }
        // A backslash that is itself escaped escapes nothing.
        let escaping = backslash & !carried;
        // Each run of escaping backslashes, starting on an even or odd bit, turned into the bit
        // after its end when the run is odd.
        let codes = ((escaping << 1 | Self::ODD).wrapping_sub(escaping)) ^ Self::ODD;
        let escaped = codes ^ (backslash | carried);
        self.carry = (codes & backslash) >> 63;
        escaped
    }

    /// 1 if the next byte after the last block is escaped.
    fn pending(&self) -> usize {
        self.carry as usize
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

    /// The next value's first byte.
    pub fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
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
        let mut seen = slot.is_some();
        self.once_in_place(&mut seen, name, |r| {
            *slot = Some(read(r)?);
            Ok(())
        })
    }

    /// [`Reader::once`] for a field that `read` fills in place; `seen` says it was given.
    pub fn once_in_place(
        &mut self,
        seen: &mut bool,
        name: &'static str,
        read: impl FnOnce(&mut Self) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let at = self.at();
        if std::mem::replace(seen, true) {
            return duplicate(at, name);
        }
        read(self)
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
