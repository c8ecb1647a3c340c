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
            Err("key: EOF while parsing a string at byte 1".into()),
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
