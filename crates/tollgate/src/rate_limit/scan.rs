//! The fields a request's token estimate needs, read from its JSON body. A one-pass reader takes
//! the bodies almost every request has, ASCII JSON: it reads what the serde reader below reads
//! and gives up
//! (`None`) on anything it is not sure of (non-ASCII text, a duplicate field, a number that is
//! not a plain integer, JSON it does not accept), leaving those bodies to serde. It exists
//! because the serde reader cost a third of the whole stack's time per call (validating and
//! decoding every string of a body to count its characters); this one counts them as it skips.

/// What the estimate reads of a body: the output limits, `n`, and the characters of text in
/// each of the text fields (`messages`, `system`, `prompt`, `input`, `contents`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fields {
    pub(super) max_tokens: Option<u64>,
    pub(super) max_completion_tokens: Option<u64>,
    pub(super) max_output_tokens: Option<u64>,
    pub(super) n: Option<u64>,
    pub(super) chars: usize,
}

/// The fields of `body`, or `None` when it is not a JSON object with them in their types.
pub(super) fn fields(body: &[u8]) -> Option<Fields> {
    match ascii_fields(body) {
        Some(fields) => Some(fields),
        None => serde_json::from_slice::<AdmissionFields>(body)
            .ok()
            .map(Into::into),
    }
}

/// The fields of `body` read in one pass, or `None` when this reader is not sure.
fn ascii_fields(body: &[u8]) -> Option<Fields> {
    if !body.is_ascii() {
        return None;
    }
    let mut scan = Scan { bytes: body, at: 0 };
    let mut fields = Fields::default();
    let mut seen = 0u16;
    scan.expect(b'{')?;
    if !scan.eat(b'}') {
        loop {
            let key = scan.key()?;
            scan.expect(b':')?;
            let slot = match key {
                b"max_tokens" => Some((0, &mut fields.max_tokens)),
                b"max_completion_tokens" => Some((1, &mut fields.max_completion_tokens)),
                b"max_output_tokens" => Some((2, &mut fields.max_output_tokens)),
                b"n" => Some((3, &mut fields.n)),
                _ => None,
            };
            let text = match key {
                b"messages" => Some(4),
                b"system" => Some(5),
                b"prompt" => Some(6),
                b"input" => Some(7),
                b"contents" => Some(8),
                _ => None,
            };
            // serde refuses a field given twice.
            for bit in slot.as_ref().map(|(bit, _)| *bit).into_iter().chain(text) {
                if seen & (1 << bit) != 0 {
                    return None;
                }
                seen |= 1 << bit;
            }
            if let Some((_, slot)) = slot {
                *slot = scan.count()?;
            } else if text.is_some() {
                fields.chars += scan.text(0)?;
            } else {
                scan.skip(0)?;
            }
            if scan.eat(b',') {
                continue;
            }
            scan.expect(b'}')?;
            break;
        }
    }
    scan.space();
    (scan.at == body.len()).then_some(fields)
}

/// Nesting deeper than this is left to serde (which has its own limit).
const MAX_DEPTH: usize = 64;

/// The bytes that end a run of plain string characters: a quote, a backslash, and the control
/// characters JSON forbids raw in a string.
const STOPS: [bool; 256] = {
    let mut stops = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        stops[byte] = true;
        byte += 1;
    }
    stops[b'"' as usize] = true;
    stops[b'\\' as usize] = true;
    stops
};

/// How many plain string characters `bytes` starts with.
fn plain_run(bytes: &[u8]) -> usize {
    // Most strings are short: a table walk beats memchr's set-up; a long one (a prompt) goes on
    // with memchr, and its control characters are looked for in one vectorisable pass.
    let head = bytes.len().min(32);
    if let Some(len) = bytes[..head].iter().position(|b| STOPS[usize::from(*b)]) {
        return len;
    }
    let len = head + memchr::memchr2(b'"', b'\\', &bytes[head..]).unwrap_or(bytes.len() - head);
    match bytes[head..len].iter().position(|b| *b < 0x20) {
        Some(control) => head + control,
        None => len,
    }
}

struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scan<'a> {
    fn space(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.space();
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let here = self.peek() == Some(byte);
        self.at += usize::from(here);
        here
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    /// An object key with no escapes (keys with escapes are left to serde).
    fn key(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.at;
        let len = plain_run(&self.bytes[start..]);
        if self.bytes.get(start + len) != Some(&b'"') {
            return None;
        }
        self.at = start + len + 1;
        let bytes: &'a [u8] = self.bytes;
        Some(&bytes[start..start + len])
    }

    /// A string's characters once decoded (the opening quote is next).
    fn string(&mut self) -> Option<usize> {
        self.expect(b'"')?;
        let mut chars = 0;
        loop {
            let len = plain_run(&self.bytes[self.at..]);
            chars += len;
            self.at += len;
            match self.bytes.get(self.at) {
                Some(b'"' | b'\\') => {}
                // A raw control character, or the end of the body.
                _ => return None,
            }
            if self.bytes[self.at] == b'"' {
                self.at += 1;
                return Some(chars);
            }
            // An escape: one character, a surrogate pair two escapes for one.
            let escape = *self.bytes.get(self.at + 1)?;
            self.at += 2;
            chars += 1;
            match escape {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                b'u' => {
                    let unit = self.hex4()?;
                    if (0xDC00..0xE000).contains(&unit) {
                        return None;
                    }
                    if (0xD800..0xDC00).contains(&unit) {
                        if self.bytes.get(self.at..self.at + 2)? != b"\\u" {
                            return None;
                        }
                        self.at += 2;
                        if !(0xDC00..0xE000).contains(&self.hex4()?) {
                            return None;
                        }
                    }
                }
                _ => return None,
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = std::str::from_utf8(self.bytes.get(self.at..self.at + 4)?).ok()?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.at += 4;
        u32::from_str_radix(digits, 16).ok()
    }

    /// A count field: a plain integer, or `null`.
    fn count(&mut self) -> Option<Option<u64>> {
        if self.literal(b"null") {
            return Some(None);
        }
        self.peek()?;
        let start = self.at;
        let mut value: u64 = 0;
        while let Some(digit) = self.bytes.get(self.at).filter(|b| b.is_ascii_digit()) {
            // Past u64: serde's to judge (it refuses it).
            value = value
                .checked_mul(10)?
                .checked_add(u64::from(digit - b'0'))?;
            self.at += 1;
        }
        let digits = self.at - start;
        // A sign, a fraction or an exponent: serde's to judge.
        if digits == 0 || matches!(self.bytes.get(self.at), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        if digits > 1 && self.bytes[start] == b'0' {
            return None;
        }
        Some(Some(value))
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        self.space();
        let here = self.bytes[self.at..].starts_with(word);
        self.at += if here { word.len() } else { 0 };
        here
    }

    /// Characters of text in a value: a string's own, an array's items', and an object's
    /// `content`, `text` and `parts` values', at any depth.
    fn text(&mut self, depth: usize) -> Option<usize> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string(),
            b'[' => {
                self.at += 1;
                let mut chars = 0;
                if self.eat(b']') {
                    return Some(0);
                }
                loop {
                    chars += self.text(depth + 1)?;
                    if self.eat(b',') {
                        continue;
                    }
                    self.expect(b']')?;
                    return Some(chars);
                }
            }
            b'{' => {
                self.at += 1;
                let mut chars = 0;
                if self.eat(b'}') {
                    return Some(0);
                }
                loop {
                    let key = self.key()?;
                    let counted = matches!(key, b"content" | b"text" | b"parts");
                    self.expect(b':')?;
                    if counted {
                        chars += self.text(depth + 1)?;
                    } else {
                        self.skip(depth + 1)?;
                    }
                    if self.eat(b',') {
                        continue;
                    }
                    self.expect(b'}')?;
                    return Some(chars);
                }
            }
            _ => self.scalar().map(|()| 0),
        }
    }

    /// Skips a value, checking it is JSON.
    fn skip(&mut self, depth: usize) -> Option<()> {
        // A value's text is skipped with the same walk: counting costs nothing more.
        self.text(depth).map(drop)
    }

    /// A number, `true`, `false` or `null`.
    fn scalar(&mut self) -> Option<()> {
        let word: &[u8] = match self.peek()? {
            b't' => b"true",
            b'f' => b"false",
            b'n' => b"null",
            _ => return self.number(),
        };
        self.literal(word).then_some(())
    }

    /// A JSON number without an exponent: `-? (0 | [1-9][0-9]*) (. [0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        let digits = |scan: &mut Self| {
            let start = scan.at;
            while scan.bytes.get(scan.at).is_some_and(u8::is_ascii_digit) {
                scan.at += 1;
            }
            scan.at - start
        };
        self.at += usize::from(self.bytes.get(self.at) == Some(&b'-'));
        let first = *self.bytes.get(self.at)?;
        let whole = digits(self);
        if whole == 0 || (first == b'0' && whole > 1) {
            return None;
        }
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            if digits(self) == 0 {
                return None;
            }
        }
        // An exponent, or hundreds of digits, may put it beyond an f64, which serde refuses:
        // serde's to judge.
        if whole > 300 || matches!(self.bytes.get(self.at), Some(b'e' | b'E')) {
            return None;
        }
        Some(())
    }
}

/// The fields of an AI request that its admission cost depends on. Deserialized without
/// building a JSON tree: text is counted, not kept. The reader of the bodies the one-pass
/// reader leaves (and the reference it is tested against).
#[derive(serde::Deserialize)]
struct AdmissionFields {
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    n: Option<u64>,
    #[serde(default)]
    messages: TextChars,
    #[serde(default)]
    system: TextChars,
    #[serde(default)]
    prompt: TextChars,
    #[serde(default)]
    input: TextChars,
    #[serde(default)]
    contents: TextChars,
}

/// Characters of text anywhere in a message structure: strings, and the `content`, `text` and
/// `parts` fields of objects, at any depth.
#[derive(Default, Clone, Copy)]
struct TextChars(usize);

impl<'de> serde::Deserialize<'de> for TextChars {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextCharsVisitor)
    }
}

struct TextCharsVisitor;

impl<'de> serde::de::Visitor<'de> for TextCharsVisitor {
    type Value = TextChars;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("message text")
    }

    fn visit_str<E>(self, text: &str) -> Result<TextChars, E> {
        Ok(TextChars(text.chars().count()))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<TextChars, A::Error> {
        let mut total = 0;
        while let Some(TextChars(chars)) = items.next_element()? {
            total += chars;
        }
        Ok(TextChars(total))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TextChars, A::Error> {
        let mut total = 0;
        while let Some(key) = map.next_key::<TextKey>()? {
            match key {
                TextKey::Text => total += map.next_value::<TextChars>()?.0,
                TextKey::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(TextChars(total))
    }

    fn visit_bool<E>(self, _: bool) -> Result<TextChars, E> {
        Ok(TextChars(0))
    }

    fn visit_i64<E>(self, _: i64) -> Result<TextChars, E> {
        Ok(TextChars(0))
    }

    fn visit_u64<E>(self, _: u64) -> Result<TextChars, E> {
        Ok(TextChars(0))
    }

    fn visit_f64<E>(self, _: f64) -> Result<TextChars, E> {
        Ok(TextChars(0))
    }

    fn visit_unit<E>(self) -> Result<TextChars, E> {
        Ok(TextChars(0))
    }
}

/// An object key: one of the text-bearing fields, or anything else.
enum TextKey {
    Text,
    Other,
}

impl<'de> serde::Deserialize<'de> for TextKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = TextKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E>(self, key: &str) -> Result<TextKey, E> {
                Ok(match key {
                    "content" | "text" | "parts" => TextKey::Text,
                    _ => TextKey::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

impl From<AdmissionFields> for Fields {
    fn from(request: AdmissionFields) -> Self {
        Fields {
            max_tokens: request.max_tokens,
            max_completion_tokens: request.max_completion_tokens,
            max_output_tokens: request.max_output_tokens,
            n: request.n,
            chars: [
                request.messages,
                request.system,
                request.prompt,
                request.input,
                request.contents,
            ]
            .iter()
            .map(|text| text.0)
            .sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn by_serde(body: &[u8]) -> Option<Fields> {
        serde_json::from_slice::<AdmissionFields>(body)
            .ok()
            .map(Into::into)
    }

    #[test]
    fn reads_the_bodies_requests_have() {
        let bodies: [&[u8]; 4] = [
            br#"{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#,
            b"{\n  \"model\": \"claude\",\n  \"max_tokens\": 400,\n  \"system\": \"Be brief.\\nVery.\",\n  \"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Say \\\"hi\\\" \\ud83d\\ude00\"}]}],\n  \"temperature\": 0.05,\n  \"stream\": true,\n  \"metadata\": null\n}",
            br#"{"contents":[{"parts":[{"text":"abc"}]}],"generationConfig":{"maxOutputTokens":8},"max_output_tokens":8}"#,
            br#"{"prompt":["ab","cd"],"n":3,"max_completion_tokens":null}"#,
        ];
        for body in bodies {
            let fast = ascii_fields(body).expect("read without serde");
            assert_eq!(
                Some(fast),
                by_serde(body),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // "Be brief.\nVery." and "Say \"hi\" " with one emoji.
        assert_eq!(ascii_fields(bodies[1]).unwrap().chars, 15 + 10);
    }

    #[test]
    fn leaves_to_serde_what_it_is_not_sure_of() {
        for body in [
            "{\"messages\":\"h\u{e9}\"}".as_bytes(),
            br#"{"max_tokens":16,"max_tokens":17}"#,
            br#"{"max_tokens":16.0}"#,
            br#"{"max_tokens":-1}"#,
            br#"{"max_tokens":"16"}"#,
            br#"{"max_tokens":99999999999999999999999}"#,
            br#"{"messages":"\ude00"}"#,
            br#"{"m\u0061x_tokens":1}"#,
            br#"{"a":[1,]}"#,
            br#"{"a":01}"#,
            br#"{"a":1} x"#,
            br#"{"a":1e999}"#,
            br#"[16]"#,
            b"",
        ] {
            assert_eq!(
                ascii_fields(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[ -~\\n\\t\"\\\\]{0,12}".prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let keys = prop::sample::select(vec!["content", "text", "parts", "role", "type", "x"]);
        leaf().prop_recursive(4, 40, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(keys.clone(), inner, 0..4).prop_map(|map| {
                    Value::Object(map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        })
    }

    fn body() -> impl Strategy<Value = Value> {
        let count = prop_oneof![
            any::<u64>().prop_map(Value::from),
            (0u64..5000).prop_map(Value::from),
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            Just(Value::from(1.5)),
        ];
        let field = prop_oneof![
            (
                prop::sample::select(vec![
                    "max_tokens",
                    "max_completion_tokens",
                    "max_output_tokens",
                    "n"
                ]),
                count
            )
                .prop_map(|(k, v)| (k, v)),
            (
                prop::sample::select(vec![
                    "messages",
                    "system",
                    "prompt",
                    "input",
                    "contents",
                    "model",
                    "temperature"
                ]),
                value()
            )
                .prop_map(|(k, v)| (k, v)),
        ];
        prop::collection::vec(field, 0..8).prop_map(|fields| {
            Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        })
    }

    proptest! {
        /// Whatever it reads, serde reads the same; of the ASCII bodies serde_json writes it
        /// leaves to serde only those with a float in exponent form.
        #[test]
        fn agrees_with_serde(body in body(), pretty in any::<bool>()) {
            let bytes = if pretty {
                serde_json::to_vec_pretty(&body).unwrap()
            } else {
                serde_json::to_vec(&body).unwrap()
            };
            let fast = ascii_fields(&bytes);
            if let Some(fast) = fast {
                prop_assert_eq!(Some(fast), by_serde(&bytes));
            } else {
                // Only non-ASCII text, or a float serde_json wrote with an exponent, is left.
                let exponent = bytes.iter().any(|b| matches!(b, b'e' | b'E'));
                prop_assert!(
                    !bytes.is_ascii() || by_serde(&bytes).is_none() || exponent,
                    "{}",
                    String::from_utf8_lossy(&bytes)
                );
            }
        }

        /// A body broken anywhere is read the same, or left to serde.
        #[test]
        fn agrees_on_broken_bodies(body in body(), at in any::<prop::sample::Index>(), byte in 0x20u8..0x7f, delete in any::<bool>()) {
            let mut bytes = serde_json::to_vec(&body).unwrap();
            let at = at.index(bytes.len());
            if delete {
                bytes.remove(at);
            } else {
                bytes[at] = byte;
            }
            if let Some(fast) = ascii_fields(&bytes) {
                prop_assert_eq!(Some(fast), by_serde(&bytes), "{}", String::from_utf8_lossy(&bytes));
            }
        }
    }
}
