use super::*;
use serde_json::json;

fn raw(doc: &str) -> Result<&str, Error> {
    let mut r = Reader::new(doc.as_bytes());
    let v = r.raw()?;
    Ok(std::str::from_utf8(v).unwrap())
}

#[test]
fn skips_each_kind_of_value_to_its_end() {
    let long = "x".repeat(40);
    let long_escaped = format!("\"{long}\\\"{long}\"");
    let cases: Vec<(String, Result<&str, &str>)> = vec![
        (r#""abc""#.into(), Ok(r#""abc""#)),
        (r#""" , 1"#.into(), Ok(r#""""#)),
        (r#""a\"b" x"#.into(), Ok(r#""a\"b""#)),
        (r#""a\\" x"#.into(), Ok(r#""a\\""#)),
        (r#""\u0022\"" x"#.into(), Ok(r#""\u0022\"""#)),
        ("\"é ü 日本\" x".into(), Ok("\"é ü 日本\"")),
        (
            r#"{"a":[1,{"b":"}]"}],"c":{}} x"#.into(),
            Ok(r#"{"a":[1,{"b":"}]"}],"c":{}}"#),
        ),
        ("[[], {}, [[\"]\"]]]] x".into(), Ok("[[], {}, [[\"]\"]]]")),
        ("  123,".into(), Ok("123")),
        ("-1.5e3}".into(), Ok("-1.5e3")),
        ("true]".into(), Ok("true")),
        ("null".into(), Ok("null")),
        (format!("{long_escaped} x"), Ok(long_escaped.as_str())),
        // Damage it notices.
        ("\"abc".into(), Err("unterminated string at byte 0")),
        (format!("\"{long}"), Err("unterminated string at byte 0")),
        ("\"a\\\"".into(), Err("unterminated string at byte 0")),
        (
            "\"a\nb\"".into(),
            Err("control character in a string at byte 2"),
        ),
        (
            format!("\"{long}\t\""),
            Err("control character in a string at byte 41"),
        ),
        (
            "{\"a\":1".into(),
            Err("unterminated object or array at byte 0"),
        ),
        ("{\"a\":[1}".into(), Err("mismatched bracket at byte 7")),
        ("[1,2}".into(), Err("mismatched bracket at byte 4")),
        (
            "{\"a\":\"}\"".into(),
            Err("unterminated object or array at byte 0"),
        ),
        ("".into(), Err("expected a value, found the end at byte 0")),
        (
            "   ".into(),
            Err("expected a value, found the end at byte 3"),
        ),
        ("x".into(), Err("expected a value at byte 0")),
        ("}".into(), Err("expected a value at byte 0")),
        (",1".into(), Err("expected a value at byte 0")),
    ];
    for (doc, want) in &cases {
        match (raw(doc), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, *want, "{doc}"),
            (Err(e), Err(want)) => assert_eq!(e.to_string(), *want, "{doc}"),
            (got, want) => panic!("{doc}: got {got:?}, want {want:?}"),
        }
    }
}

/// The eight-byte scan finds the first special byte wherever it falls in a word, and flags
/// nothing else: not UTF-8's high bytes, not the neighbours of the brackets and the quote.
#[test]
fn the_word_scan_finds_the_first_special_byte_at_every_offset() {
    let plain: Vec<u8> = [
        b'a',
        0x7f,
        0x80,
        0xc3,
        0xa9,
        0xff,
        b'!',
        b'#',
        b'Z',
        b'\\' ^ 0x20,
    ]
    .into_iter()
    .cycle()
    .take(37)
    .collect();
    // Outside strings `\` is not special; inside, `[` `]` `{` `}` are not.
    for at in 0..plain.len() {
        for special in [b'"', b'\\', 0x00, 0x1f] {
            let mut s = plain.clone();
            s[at] = special;
            let found = scan(&s, 0, |x| {
                zero_bytes(x ^ splat(b'"')) | zero_bytes(x ^ splat(b'\\')) | bytes_below(x, 0x20)
            });
            assert!(found <= at, "{special:#x} at {at}: {found}");
            assert!(
                found == at || found + 8 > s.len(),
                "{special:#x} at {at}: {found}"
            );
        }
        for special in [b'"', b'{', b'}', b'[', b']'] {
            let mut s = plain.clone();
            s[at] = special;
            let found = scan(&s, 0, |x| {
                let y = x | splat(0x20);
                zero_bytes(x ^ splat(b'"'))
                    | zero_bytes(y ^ splat(b'{'))
                    | zero_bytes(y ^ splat(b'}'))
            });
            assert!(found <= at, "{special:#x} at {at}: {found}");
            assert!(
                found == at || found + 8 > s.len(),
                "{special:#x} at {at}: {found}"
            );
        }
    }
    // And with nothing special, the scan stops only for the tail.
    assert!(scan(&plain, 0, |x| zero_bytes(x ^ splat(b'"'))) + 8 > plain.len());
}

#[test]
fn nesting_stops_at_serde_jsons_limit() {
    let ok = format!("{}{}", "[".repeat(128), "]".repeat(128));
    assert_eq!(raw(&ok).map(str::len), Ok(256));
    let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
    assert_eq!(
        raw(&deep).unwrap_err().to_string(),
        "nested too deeply at byte 128"
    );
    // A huge unclosed nesting is an error, not a stack overflow (the skip does not recurse).
    let many = "{\"a\":".repeat(100_000);
    assert!(raw(&many).is_err());
}

/// Any document serde_json writes, compact or pretty, is skipped whole.
#[test]
fn skips_whatever_serde_json_writes() {
    let values = [
        json!(null),
        json!(-0.5),
        json!("with \"quotes\", \\ and \u{1} and \u{7f} and 日本"),
        json!({"managedFields": [{"manager": "kubectl", "fieldsV1": {"f:data": {".": {},
            "f:password": {}}, "f:metadata": {"f:labels": {"f:a[0]": {}}}}}], "k": [true, false]}),
        json!([[], {}, "", [[[["x"]]]], {"": {"": ""}}]),
    ];
    for v in values {
        for doc in [v.to_string(), serde_json::to_string_pretty(&v).unwrap()] {
            let padded = format!(" \n{doc}\t ");
            let mut r = Reader::new(padded.as_bytes());
            assert_eq!(r.raw().unwrap(), doc.as_bytes(), "{doc}");
            r.end().unwrap();
        }
    }
}

type Members = Result<Vec<(String, String)>, String>;

fn members(doc: &str) -> Members {
    let mut r = Reader::new(doc.as_bytes());
    let mut out = Vec::new();
    r.object(|r, key| {
        let name = ["a", "b", "uid", ""]
            .into_iter()
            .find(|n| key.is(n))
            .unwrap_or("?");
        let v = r.raw()?;
        out.push((name.to_string(), String::from_utf8_lossy(v).into_owned()));
        Ok(Walk::Next)
    })
    .map_err(|e| e.to_string())?;
    r.end().map_err(|e| e.to_string())?;
    Ok(out)
}

#[test]
fn walks_the_members_of_an_object() {
    let ok = |pairs: &[(&str, &str)]| -> Members {
        Ok(pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    };
    let cases: Vec<(&str, Members)> = vec![
        ("{}", ok(&[])),
        (" { } ", ok(&[])),
        (r#"{"a":1}"#, ok(&[("a", "1")])),
        (
            "{ \"a\" : [1, 2] ,\n\"b\":{\"a\":2}, \"c\": \"x\" }",
            ok(&[("a", "[1, 2]"), ("b", r#"{"a":2}"#), ("?", r#""x""#)]),
        ),
        // Keys are compared decoded: only a client that is not Go's writes them so.
        (
            r#"{"\u0075id":"u","\"":1,"":2}"#,
            ok(&[("uid", r#""u""#), ("?", "1"), ("", "2")]),
        ),
        (
            r#"{"a\u":1}"#,
            Err("invalid escape in a string at byte 3".into()),
        ),
        (
            r#"{"a\ud800":1}"#,
            Err("key: unexpected end of hex escape at byte 1".into()),
        ),
        ("[]", Err("expected an object at byte 0".into())),
        ("", Err("expected an object at byte 0".into())),
        (r#"{"a":1,}"#, Err("expected a key at byte 7".into())),
        (r#"{"a" 1}"#, Err("expected ':' at byte 5".into())),
        (
            r#"{"a":1 "b":2}"#,
            Err("expected ',' or '}' at byte 7".into()),
        ),
        (r#"{"a":}"#, Err("expected a value at byte 5".into())),
        (r#"{"a":1"#, Err("expected ',' or '}' at byte 6".into())),
        (r#"{a:1}"#, Err("expected a key at byte 1".into())),
        (r#"{"a":1} x"#, Err("trailing characters at byte 8".into())),
        (r#"{"a":1}{}"#, Err("trailing characters at byte 7".into())),
    ];
    for (doc, want) in cases {
        assert_eq!(members(doc), want, "{doc}");
    }
}

#[test]
fn reads_values_through_serde_json_with_the_documents_offsets() {
    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Kind<'a> {
        #[serde(borrow)]
        kind: Cow<'a, str>,
    }
    let doc = br#"{"a": "x\"y", "b": {"kind": "Secret"}, "n": null, "bad": 5}"#;
    let mut r = Reader::new(doc);
    let (mut a, mut b, mut n) = (None, None, None);
    let mut bad = None;
    r.object(|r, key| {
        if key.is("a") {
            r.read_once(&mut a, "a")?;
        } else if key.is("b") {
            r.read_once(&mut b, "b")?;
        } else if key.is("n") {
            r.read_once(&mut n, "n")?;
        } else {
            bad = Some(r.read::<String>());
        }
        Ok(Walk::Next)
    })
    .unwrap();
    let a: Cow<str> = a.unwrap();
    assert_eq!(a, "x\"y");
    // A string without escapes borrows from the document.
    let b: Kind = b.unwrap();
    assert!(matches!(b.kind, Cow::Borrowed("Secret")));
    assert_eq!(n, Some(None::<String>));
    assert_eq!(
        bad.unwrap().unwrap_err().to_string(),
        "invalid type: integer `5`, expected a string at byte 57"
    );

    // A field given twice is an error, as it is for serde's derived structs.
    let mut r = Reader::new(br#"{"a": "1", "a": "2"}"#);
    let mut a: Option<String> = None;
    let e = r
        .object(|r, _| r.read_once(&mut a, "a").map(|()| Walk::Next))
        .unwrap_err();
    assert_eq!(e.to_string(), "duplicate field `a` at byte 16");

    // `null` is consumed only when it is the literal.
    for (doc, is_null, rest) in [
        ("null", true, ""),
        (" null ,", true, " ,"),
        ("nullx", false, "nullx"),
        ("\"null\"", false, "\"null\""),
        ("nul", false, "nul"),
    ] {
        let mut r = Reader::new(doc.as_bytes());
        assert_eq!(r.null(), is_null, "{doc}");
        assert_eq!(&doc[r.i..], rest, "{doc}");
    }
}

#[test]
fn text_borrows_unless_the_string_has_escapes() {
    // (document, the string read or the error, whether it is borrowed from the document)
    let cases: [(&str, Result<&str, &str>, bool); 6] = [
        (r#""abc""#, Ok("abc"), true),
        (r#""""#, Ok(""), true),
        (r#""日本""#, Ok("日本"), true),
        (r#""a\"b""#, Ok("a\"b"), false),
        (r#""\u00e9""#, Ok("é"), false),
        (
            "5",
            Err("invalid type: integer `5`, expected a string"),
            false,
        ),
    ];
    for (doc, want, borrowed) in cases {
        let got = Reader::new(doc.as_bytes()).text();
        match (&got, want) {
            (Ok(got), Ok(want)) => {
                assert_eq!(got, want, "{doc}");
                assert_eq!(matches!(got, Cow::Borrowed(_)), borrowed, "{doc}");
            }
            (Err(e), Err(want)) => assert_eq!(e.what, want, "{doc}"),
            _ => panic!("{doc}: {got:?}"),
        }
    }
}

/// The skip a byte at a time, as plainly as it can be written: what the word and block scans
/// must agree with, errors and their bytes included. A backslash escapes the next byte wherever
/// it stands (outside a string that is not JSON, but it makes the answer the same whatever the
/// alignment of the blocks).
fn skip_bytewise(b: &[u8], start: usize) -> Result<usize, Error> {
    let mut stack: Vec<u8> = Vec::new();
    let mut quote: Option<usize> = None;
    let mut i = start;
    if b.get(start) == Some(&b'"') {
        quote = Some(start);
        i += 1;
    }
    while let Some(&c) = b.get(i) {
        match (quote, c) {
            (Some(_), b'\\') => {
                let valid = match b.get(i + 1) {
                    None => true,
                    Some(b'u') => b
                        .get(i + 2..i + 6)
                        .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)),
                    Some(e) => b"\"\\/bfnrt".contains(e),
                };
                if !valid {
                    return err(i, "invalid escape in a string");
                }
                i += 1;
            }
            (None, b'\\') => i += 1,
            (Some(_), b'"') => {
                quote = None;
                if stack.is_empty() {
                    return Ok(i + 1);
                }
            }
            (Some(_), c) if c < 0x20 => return err(i, "control character in a string"),
            (Some(_), _) => {}
            (None, b'"') => quote = Some(i),
            (None, b'{' | b'[') => {
                if stack.len() == MAX_DEPTH as usize {
                    return err(i, "nested too deeply");
                }
                stack.push(c);
            }
            (None, b'}' | b']') => {
                if stack.pop().map(|o| o + 2) != Some(c) {
                    return err(i, "mismatched bracket");
                }
                if stack.is_empty() {
                    return Ok(i + 1);
                }
            }
            (None, _) => {}
        }
        i += 1;
    }
    match quote {
        Some(q) => err(q, "unterminated string"),
        None => err(start, "unterminated object or array"),
    }
}

/// A small deterministic generator (xorshift), so a failure names a seed that repeats it.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Something JSON-like: nested objects and arrays, strings short and long (over a block) with
/// escapes, runs of backslashes and multi-byte UTF-8.
fn json_like(rng: &mut Rng, out: &mut Vec<u8>, depth: usize) {
    match rng.below(if depth > 6 { 3 } else { 6 }) {
        0 => out.extend_from_slice(b"12"),
        1 | 2 => {
            out.push(b'"');
            let len = [0, 3, 30, 70, 150][rng.below(5)];
            for _ in 0..len {
                match rng.below(14) {
                    0 => out.extend_from_slice(b"\\\""),
                    12 => out.extend_from_slice(b"\\u00e9\\n"),
                    13 => out.extend_from_slice(b"\\u12"),
                    1 => out.extend_from_slice(&b"\\\\\\\\\\\\"[..2 * (1 + rng.below(3))]),
                    2 => out.extend_from_slice("é".as_bytes()),
                    3 => out.extend_from_slice(b"{]"),
                    _ => out.push(b'a' + rng.below(26) as u8),
                }
            }
            out.push(b'"');
        }
        k => {
            let (open, close) = if k == 3 { (b'[', b']') } else { (b'{', b'}') };
            out.push(open);
            for n in 0..rng.below(5) {
                if n > 0 {
                    out.push(b',');
                }
                if open == b'{' {
                    json_like(rng, out, 7);
                    out.push(b':');
                }
                json_like(rng, out, depth + 1);
            }
            out.push(close);
        }
    }
}

/// The block scan skips what the byte-at-a-time skip skips, and fails where it fails, on
/// JSON-like documents and on each of them damaged at one byte (a quote, a backslash, a
/// bracket or a control character put anywhere), at every alignment to the blocks.
#[test]
fn the_block_scan_agrees_with_a_byte_at_a_time_skip() {
    let damage = [b'"', b'\\', b'{', b'}', b'[', b']', b'\n', 0x00, b'x'];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0;
    for seed in 0..3000 {
        let mut doc = Vec::new();
        json_like(&mut rng, &mut doc, 0);
        doc.extend_from_slice(b" ,x");
        let mut docs = vec![doc.clone()];
        for _ in 0..3 {
            let mut d = doc.clone();
            let at = rng.below(d.len());
            d[at] = damage[rng.below(damage.len())];
            docs.push(d);
        }
        // Cut short, too: the end of the document inside a string or a container.
        docs.push(doc[..rng.below(doc.len())].to_vec());
        for d in docs {
            for pad in [0, 1, 7, 63] {
                let mut padded = vec![b' '; pad];
                padded.extend_from_slice(&d);
                let want = match padded.get(pad) {
                    Some(b'"' | b'{' | b'[') => skip_bytewise(&padded, pad),
                    _ => continue,
                };
                let got = Reader::new(&padded).raw().map(|v| pad + v.len());
                assert_eq!(
                    got,
                    want,
                    "seed {seed} pad {pad}: {}",
                    String::from_utf8_lossy(&padded)
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
}

/// Each mask of a block flags exactly its bytes, wherever they fall in the 64.
#[test]
fn a_block_flags_exactly_its_bytes() {
    let mut rng = Rng(7);
    let alphabet = [
        b'"',
        b'\\',
        b'{',
        b'}',
        b'[',
        b']',
        0x00,
        0x1f,
        0x20,
        b'a',
        b'|',
        b';',
        0x7b ^ 0x80,
        0x7f,
        0x80,
        0xff,
        b'\n',
    ];
    for _ in 0..5000 {
        let bytes: Vec<u8> = (0..64)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let block = Block::at(&bytes, 0).unwrap();
        let mask = |f: &dyn Fn(u8) -> bool| {
            bytes
                .iter()
                .enumerate()
                .filter(|(_, c)| f(**c))
                .fold(0u64, |m, (k, _)| m | 1 << k)
        };
        let want = Block {
            quote: mask(&|c| c == b'"'),
            backslash: mask(&|c| c == b'\\'),
            control: mask(&|c| c < 0x20),
            open: mask(&|c| c == b'{' || c == b'['),
            close: mask(&|c| c == b'}' || c == b']'),
            curly: mask(&|c| c == b'{' || c == b'}'),
        };
        assert_eq!(block, want, "{bytes:?}");
    }
    assert_eq!(Block::at(&[b'"'; 63], 0), None);
}

/// Escapes across blocks: runs of backslashes of every length, ending anywhere, as a byte at a
/// time sees them.
#[test]
fn escapes_follow_runs_of_backslashes_across_blocks() {
    let mut rng = Rng(11);
    for _ in 0..5000 {
        let bits: Vec<bool> = (0..256).map(|_| rng.below(3) == 0).collect();
        let mut want = vec![false; bits.len()];
        let mut escaping = false;
        for (k, &backslash) in bits.iter().enumerate() {
            want[k] = escaping;
            escaping = !escaping && backslash;
        }
        let mut escapes = Escapes::default();
        for (n, chunk) in bits.chunks(64).enumerate() {
            let backslash = chunk
                .iter()
                .enumerate()
                .fold(0u64, |m, (k, b)| m | u64::from(*b) << k);
            let got = escapes.next(backslash);
            for k in 0..64 {
                assert_eq!(got >> k & 1 == 1, want[64 * n + k], "bit {}", 64 * n + k);
            }
        }
    }
}
