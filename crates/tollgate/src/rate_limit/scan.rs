//! The fields a request's token estimate needs, read from its JSON body. A one-pass reader takes
//! the bodies almost every request has, ASCII JSON: it reads what the serde reader below reads
//! and gives up (`None`) on anything it is not sure of (non-ASCII text, a duplicate field, a
//! number that is not a plain integer, an escaped key, nesting past 64), leaving those bodies to
//! serde. It exists because the serde reader cost a third of the whole stack's time per call
//! (validating and decoding every string of a body to count its characters); this one counts
//! them as it skips.
//!
//! The reader is a loop over the body with the open containers kept in two bit sets, not a
//! recursive descent: a small request is a couple of dozen tokens, and a call and an `Option`
//! per token cost more than the tokens themselves. Strings are skipped eight bytes at a time.

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
    let mut scan = Scan { bytes: body, at: 0 };
    let mut fields = Fields::default();
    let mut seen = 0u16;
    if scan.token()? != b'{' {
        return None;
    }
    if scan.peek()? == b'}' {
        scan.at += 1;
    } else {
        loop {
            if scan.token()? != b'"' {
                return None;
            }
            let key = scan.key()?;
            let (bit, slot) = match key {
                b"max_tokens" => (0, Some(&mut fields.max_tokens)),
                b"max_completion_tokens" => (1, Some(&mut fields.max_completion_tokens)),
                b"max_output_tokens" => (2, Some(&mut fields.max_output_tokens)),
                b"n" => (3, Some(&mut fields.n)),
                b"messages" => (4, None),
                b"system" => (5, None),
                b"prompt" => (6, None),
                b"input" => (7, None),
                b"contents" => (8, None),
                _ => (16, None),
            };
            if bit < 16 {
                // serde refuses a field given twice.
                if seen & (1 << bit) != 0 {
                    return None;
                }
                seen |= 1 << bit;
            }
            if let Some(slot) = slot {
                *slot = scan.count()?;
            } else {
                let chars = scan.value(bit < 16)?;
                fields.chars += chars;
            }
            match scan.token()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
    }
    match scan.peek() {
        None => Some(fields),
        Some(_) => None,
    }
}

/// Open containers past this depth are left to serde (which has its own limit): the reader keeps
/// them in the bits of a `u64`.
const MAX_DEPTH: u32 = 64;

const ONES: u64 = u64::from_le_bytes([1; 8]);
const HIGH: u64 = u64::from_le_bytes([0x80; 8]);

/// The bytes of `word` (little-endian) that end a run of plain string characters, each marked by
/// its high bit: a quote, a backslash, a control character JSON forbids raw, or a non-ASCII
/// byte. Only the lowest mark is exact (a borrow may mark bytes above a true one), which is the
/// only one read.
#[inline(always)]
fn stops(word: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v;
    let quote = zero(word ^ (ONES * u64::from(b'"')));
    let backslash = zero(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    (quote | backslash | control | word) & HIGH
}

/// How many plain string characters `bytes` starts with, read eight at a time.
#[inline(always)]
fn plain_run(bytes: &[u8]) -> usize {
    let mut at = 0;
    loop {
        let mut word = [b'"'; 8];
        let tail = bytes.len() - at;
        if tail >= 8 {
            word.copy_from_slice(&bytes[at..at + 8]);
        } else {
            // The end of the body reads as a quote: the run ends there.
            word[..tail].copy_from_slice(&bytes[at..]);
        }
        let marks = stops(u64::from_le_bytes(word));
        if marks != 0 {
            return at + (marks.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
}

struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scan<'a> {
    /// The next byte that is not white space, left in place.
    #[inline(always)]
    fn peek(&mut self) -> Option<u8> {
        loop {
            let byte = *self.bytes.get(self.at)?;
            // Every byte JSON allows outside strings is above the space but white space.
            if byte > b' ' || !matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(byte);
            }
            self.at += 1;
        }
    }

    /// The next byte that is not white space, taken.
    #[inline(always)]
    fn token(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    /// An object key with no escapes (keys with escapes are left to serde), its opening quote
    /// taken, and the colon after it.
    #[inline(always)]
    fn key(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        let len = plain_run(&self.bytes[start..]);
        if self.bytes.get(start + len) != Some(&b'"') {
            return None;
        }
        self.at = start + len + 1;
        if self.token()? != b':' {
            return None;
        }
        let bytes: &'a [u8] = self.bytes;
        Some(&bytes[start..start + len])
    }

    /// The rest of a string (its opening quote taken): its characters once decoded.
    #[inline(always)]
    fn string(&mut self) -> Option<usize> {
        // Most strings have no escape: read inline; the rest out of line.
        let len = plain_run(&self.bytes[self.at..]);
        self.at += len;
        if self.bytes.get(self.at) == Some(&b'"') {
            self.at += 1;
            return Some(len);
        }
        self.escaped_string(len)
    }

    /// The rest of a string from a byte that is not a plain character, `chars` read before it.
    #[inline(never)]
    fn escaped_string(&mut self, mut chars: usize) -> Option<usize> {
        loop {
            match *self.bytes.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return Some(chars);
                }
                b'\\' => {}
                // A raw control character or a non-ASCII byte.
                _ => return None,
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
            let len = plain_run(&self.bytes[self.at..]);
            chars += len;
            self.at += len;
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.at..self.at + 4)?;
        let mut unit = 0;
        for digit in digits {
            unit = unit << 4 | char::from(*digit).to_digit(16)?;
        }
        self.at += 4;
        Some(unit)
    }

    /// A count field: a plain integer, or `null`.
    fn count(&mut self) -> Option<Option<u64>> {
        if self.peek()? == b'n' {
            self.at += 1;
            return self.literal(b"ull").then_some(None);
        }
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

    /// The rest of a literal whose first byte was taken.
    #[inline(always)]
    fn literal(&mut self, rest: &[u8]) -> bool {
        let here = self.bytes[self.at..].starts_with(rest);
        self.at += if here { rest.len() } else { 0 };
        here
    }

    /// A value, checked to be JSON, and the characters of text in it when `counted`: a string's
    /// own, an array's items', and an object's `content`, `text` and `parts` values', at any
    /// depth.
    fn value(&mut self, counted: bool) -> Option<usize> {
        let mut chars = 0;
        // The open containers, innermost in the lowest bit: which are objects, and which have
        // their values counted.
        let (mut depth, mut objects, mut counting) = (0u32, 0u64, 0u64);
        // Whether the value about to be read is counted.
        let mut counts = counted;
        loop {
            match self.token()? {
                b'"' => {
                    let len = self.string()?;
                    if counts {
                        chars += len;
                    }
                }
                open @ (b'[' | b'{') => {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    let object = open == b'{';
                    depth += 1;
                    objects = objects << 1 | u64::from(object);
                    counting = counting << 1 | u64::from(counts);
                    let close = if object { b'}' } else { b']' };
                    if self.peek()? != close {
                        counts = if object { self.member(counts)? } else { counts };
                        continue;
                    }
                    self.at += 1;
                    depth -= 1;
                    objects >>= 1;
                    counting >>= 1;
                }
                b't' if self.literal(b"rue") => {}
                b'f' if self.literal(b"alse") => {}
                b'n' if self.literal(b"ull") => {}
                b'-' | b'0'..=b'9' => {
                    self.at -= 1;
                    self.number()?;
                }
                _ => return None,
            }
            // After a value: close what ends here, then on to the next value or the end.
            loop {
                if depth == 0 {
                    return Some(chars);
                }
                let object = objects & 1 != 0;
                match (self.token()?, object) {
                    (b',', true) => {
                        counts = self.member(counting & 1 != 0)?;
                        break;
                    }
                    (b',', false) => {
                        counts = counting & 1 != 0;
                        break;
                    }
                    (b'}', true) | (b']', false) => {
                        depth -= 1;
                        objects >>= 1;
                        counting >>= 1;
                    }
                    _ => return None,
                }
            }
        }
    }

    /// An object member's key and colon: whether its value is counted (the object's values are,
    /// and the key is one of the text-bearing ones).
    #[inline(always)]
    fn member(&mut self, counting: bool) -> Option<bool> {
        if self.token()? != b'"' {
            return None;
        }
        let key = self.key()?;
        Some(counting && matches!(key, b"content" | b"text" | b"parts"))
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
