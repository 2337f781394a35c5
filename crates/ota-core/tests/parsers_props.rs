//! Property tests: every emit/parse pair round-trips, and every parser returns (never
//! panics) on arbitrary bytes. Case counts are kept modest; the fuzz targets go further.

use ota_core::frame::Kind;
use ota_core::frame::enigma::{
    self, EnigmaChunk, EnigmaHeader, EnigmaLine, EnigmaResult, EnigmaStatus,
};
use ota_core::frame::sming::{self, PatchEncoding, SmingPayload};
use ota_core::frame::thingsboard::{
    self, AttributePush, Attributes, AttributesRequest, AttributesResponse, Deleted, Field,
    FieldSet, FirmwareInfo, JsonStr, OtaTelemetry, TelemetryRecord, parse_telemetry,
};
use ota_core::topic::{self, Name, RequestId, Topic};
use ota_core::version::{self, Version};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

// ---- strategies

fn ident(numeric_ok_leading_zero: bool) -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9A-Za-z-]{0,6}[A-Za-z-][0-9A-Za-z-]{0,6}",
        if numeric_ok_leading_zero {
            "[0-9]{1,8}".boxed()
        } else {
            "(0|[1-9][0-9]{0,20})".boxed()
        },
    ]
}

fn version_text() -> impl Strategy<Value = String> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        prop::option::of(prop::collection::vec(ident(false), 1..4)),
        prop::option::of(prop::collection::vec(ident(true), 1..3)),
    )
        .prop_map(|(a, b, c, pre, build)| {
            let mut s = format!("{a}.{b}.{c}");
            if let Some(p) = pre {
                s += "-";
                s += &p.join(".");
            }
            if let Some(b) = build {
                s += "+";
                s += &b.join(".");
            }
            s
        })
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Firmware), Just(Kind::Software)]
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9:._ -]{1,20}"
}

fn int32() -> impl Strategy<Value = u32> {
    0..=topic::MAX_INT32
}

/// Strings that need no JSON escaping, including non-ASCII.
fn plain() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ._:/=+é😀-]{0,40}"
}

fn opt_plain() -> BoxedStrategy<Option<String>> {
    prop::option::of(plain()).boxed()
}

#[allow(clippy::ref_option)] // called on fields of generated tuples
fn js(s: &Option<String>) -> Option<JsonStr<'_>> {
    s.as_deref().map(|x| JsonStr::plain(x).unwrap())
}

#[derive(Debug, Clone)]
struct InfoText([Option<String>; 6], Option<u64>);

fn info_text() -> impl Strategy<Value = InfoText> {
    (
        [
            opt_plain(),
            opt_plain(),
            opt_plain(),
            prop::option::of("[A-Z0-9_]{0,16}").boxed(),
            opt_plain(),
            opt_plain(),
        ],
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(s, n)| InfoText(s, n))
}

impl InfoText {
    fn info(&self) -> FirmwareInfo<'_> {
        let [title, version, tag, alg, sum, url] = &self.0;
        FirmwareInfo {
            title: js(title),
            version: js(version),
            tag: js(tag),
            size: self.1,
            checksum_algorithm: js(alg),
            checksum: js(sum),
            url: js(url),
        }
    }
}

fn tel(v: &[Option<String>; 4]) -> OtaTelemetry<'_> {
    OtaTelemetry {
        state: js(&v[0]),
        error: js(&v[1]),
        current_title: js(&v[2]),
        current_version: js(&v[3]),
    }
}

fn field_set() -> impl Strategy<Value = FieldSet> {
    prop::collection::vec(prop::sample::select(Field::ALL.to_vec()), 0..9)
        .prop_map(|fs| fs.into_iter().fold(FieldSet::EMPTY, FieldSet::with))
}

proptest! {
    #![proptest_config(config())]

    // ---- version

    #[test]
    fn version_round_trips(text in version_text()) {
        let v = Version::parse(&text).unwrap();
        prop_assert_eq!(v.to_string(), text.clone());
        let again = v.to_string();
        prop_assert_eq!(Version::parse(&again), Ok(v));
        version::fuzz_check(text.as_bytes());
    }

    #[test]
    fn version_order_is_total_and_antisymmetric(a in version_text(), b in version_text()) {
        let (x, y) = (Version::parse(&a).unwrap(), Version::parse(&b).unwrap());
        prop_assert_eq!(x.cmp_precedence(&y), y.cmp_precedence(&x).reverse());
        prop_assert_eq!(x.cmp(&y), y.cmp(&x).reverse());
        prop_assert_eq!(x.cmp(&y) == std::cmp::Ordering::Equal, x == y);
    }

    #[test]
    fn version_parse_never_panics(data in prop::collection::vec(any::<u8>(), 0..64)) {
        version::fuzz_check(&data);
    }

    #[test]
    fn version_parse_never_panics_near_grammar(s in "[0-9.+a-z-]{0,24}") {
        version::fuzz_check(s.as_bytes());
    }

    // ---- topic

    #[test]
    fn tb_topics_round_trip(k in kind(), id in int32(), chunk in int32(), req in "[0-9]{1,12}", which in 0u8..8) {
        let request_id = RequestId::new(&req).unwrap();
        let t = match which {
            0 => Topic::Attributes,
            1 => Topic::Telemetry,
            2 => Topic::AttributesRequest { id },
            3 => Topic::AttributesResponse { id },
            4 => Topic::RpcRequest { id },
            5 => Topic::RpcResponse { id },
            6 => Topic::ChunkRequest { kind: k, request_id, chunk },
            _ => Topic::ChunkResponse { kind: k, request_id, chunk },
        };
        let text = t.to_string();
        prop_assert_eq!(Topic::parse(&text), Ok(t));
    }

    #[test]
    fn sming_and_enigma_topics_round_trip(app in name(), a in any::<u32>(), b in any::<u32>(), net in name(), node in name(), which in 0u8..5) {
        let app = Name::new(&app, topic::Field::SmingApp).unwrap();
        let net = Name::new(&net, topic::Field::EnigmaNetwork).unwrap();
        let node = Name::new(&node, topic::Field::EnigmaNode).unwrap();
        let t = match which {
            0 => Topic::SmingUpdate { app, major: a, minor: b },
            1 => Topic::EnigmaOta { net, node },
            2 => Topic::EnigmaOtaResult { net, node },
            3 => Topic::EnigmaSleepTime { net, node },
            _ => Topic::EnigmaSleepTimeResult { net, node },
        };
        let text = t.to_string();
        // A name may collide with a ThingsBoard keyword shape, e.g. net "v2"; then the parse
        // must still succeed and format back to the same text.
        let parsed = Topic::parse(&text).unwrap();
        prop_assert_eq!(parsed.to_string(), text.as_str());
        if !matches!(parsed, Topic::Attributes | Topic::Telemetry) {
            prop_assert_eq!(parsed, t);
        }
    }

    #[test]
    fn topic_parse_never_panics(data in prop::collection::vec(any::<u8>(), 0..64)) {
        topic::fuzz_check(&data);
    }

    #[test]
    fn topic_parse_never_panics_near_grammar(s in "(v1|v2|a|fw|sw|devices|me|attributes|request|response|chunk|rpc|u|set|result|ota|[0-9]{1,12}|4\\.3|\\+|#|)(/(v1|v2|a|fw|sw|devices|me|attributes|request|response|chunk|rpc|u|set|result|ota|[0-9]{1,12}|4\\.3|\\+|#|)){0,6}") {
        topic::fuzz_check(s.as_bytes());
    }

    // ---- Sming

    #[test]
    fn sming_varint_round_trips(patch in any::<u32>(), body in prop::collection::vec(any::<u8>(), 0..64)) {
        let p = SmingPayload { patch, body: &body };
        let mut buf = [0u8; 80];
        let prefix = p.emit(PatchEncoding::Varint, &mut buf).unwrap();
        prop_assert!(prefix.len <= 5);
        prop_assert_eq!(prefix.warning.is_some(), patch > 127);
        prop_assert_eq!(SmingPayload::parse(&buf[..prefix.len + body.len()], PatchEncoding::Varint), Ok(p));
        prop_assert_eq!(sming::device_decode(&buf), Some((sming::device_reading(patch), prefix.len)));
    }

    #[test]
    fn sming_byte_round_trips(patch in 0u32..=255, body in prop::collection::vec(any::<u8>(), 0..64)) {
        let p = SmingPayload { patch, body: &body };
        let mut buf = [0u8; 80];
        p.emit(PatchEncoding::Byte, &mut buf).unwrap();
        prop_assert_eq!(SmingPayload::parse(&buf[..=body.len()], PatchEncoding::Byte), Ok(p));
    }

    #[test]
    fn sming_parse_never_panics(data in prop::collection::vec(any::<u8>(), 0..40)) {
        sming::fuzz_check(&data);
    }

    // ---- EnigmaIoT

    #[test]
    fn enigma_header_round_trips(size in 1..=enigma::MAX_IMAGE_SIZE, md5 in any::<[u8; 16]>()) {
        let h = EnigmaHeader::for_image(size, md5).unwrap();
        prop_assert_eq!(u32::from(h.chunks), size.div_ceil(212));
        let mut buf = [0u8; 64];
        let n = h.emit(&mut buf).unwrap();
        prop_assert_eq!(EnigmaLine::parse(&buf[..n]), Ok(EnigmaLine::Header(h)));
    }

    #[test]
    fn enigma_chunk_round_trips(index in 1u16.., data in prop::collection::vec(any::<u8>(), 1..=212)) {
        let mut line = [0u8; enigma::MAX_LINE_LEN];
        let n = EnigmaChunk::emit(index, &data, &mut line).unwrap();
        let Ok(EnigmaLine::Chunk(c)) = EnigmaLine::parse(&line[..n]) else {
            return Err(TestCaseError::fail("chunk line did not parse"));
        };
        prop_assert_eq!(c.index, index);
        prop_assert_eq!(c.data_len(), data.len());
        let mut raw = [0u8; 212];
        prop_assert_eq!(c.decode_into(&mut raw).unwrap(), &data[..]);
    }

    #[test]
    fn enigma_result_round_trips(code in 0u8..7, last in any::<u16>()) {
        let status = EnigmaStatus::from_code(code).unwrap();
        let r = EnigmaResult { status, last_chunk: (status == EnigmaStatus::OutOfSequence).then_some(last) };
        let mut buf = [0u8; 96];
        let n = r.emit(&mut buf).unwrap();
        prop_assert_eq!(EnigmaResult::parse(&buf[..n]), Ok(r));
    }

    #[test]
    fn enigma_parse_never_panics(data in prop::collection::vec(any::<u8>(), 0..80)) {
        enigma::fuzz_check(&data);
    }

    #[test]
    fn enigma_parse_never_panics_near_grammar(s in "[0-9]{0,6},[A-Za-z0-9+/=,]{0,40}") {
        enigma::fuzz_check(s.as_bytes());
    }

    // ---- ThingsBoard JSON

    #[test]
    fn tb_attributes_round_trip(fw in info_text(), sw in info_text()) {
        let a = Attributes { fw: fw.info(), sw: sw.info() };
        let mut buf = [0u8; 2048];
        let n = a.emit(&mut buf).unwrap();
        prop_assert_eq!(Attributes::parse(&buf[..n]), Ok(a));
        prop_assert_eq!(AttributePush::parse(&buf[..n]), Ok(AttributePush::Updated(a)));
    }

    #[test]
    fn tb_response_round_trips(fw in info_text(), sw in info_text(), client in any::<bool>(), shared in any::<bool>()) {
        let a = Attributes { fw: fw.info(), sw: sw.info() };
        let r = AttributesResponse { client: client.then_some(a), shared: shared.then_some(a) };
        let mut buf = [0u8; 4096];
        let n = r.emit(&mut buf).unwrap();
        prop_assert_eq!(AttributesResponse::parse(&buf[..n]), Ok(r));
    }

    #[test]
    fn tb_deleted_round_trips(fw in field_set(), sw in field_set()) {
        let p = AttributePush::Deleted(Deleted { fw, sw });
        let mut buf = [0u8; 512];
        let n = p.emit(&mut buf).unwrap();
        prop_assert_eq!(AttributePush::parse(&buf[..n]), Ok(p));
    }

    #[test]
    fn tb_request_round_trips(k in kind(), fields in field_set()) {
        let mut buf = [0u8; 256];
        let n = AttributesRequest::emit_for(k, fields, &mut buf).unwrap();
        let req = AttributesRequest::parse(&buf[..n]).unwrap();
        prop_assert_eq!(req.shared_fields(k), fields);
        let mut buf2 = [0u8; 256];
        let n2 = req.emit(&mut buf2).unwrap();
        prop_assert_eq!(&buf2[..n2], &buf[..n]);
    }

    #[test]
    fn tb_telemetry_round_trips(ts in prop::option::of(any::<u64>()), f in [opt_plain(), opt_plain(), opt_plain(), opt_plain()], s in [opt_plain(), opt_plain(), opt_plain(), opt_plain()], array in any::<bool>()) {
        let r = TelemetryRecord { ts, fw: tel(&f), sw: tel(&s) };
        let mut buf = [0u8; 2048];
        let n = r.emit(&mut buf).unwrap();
        let text = if array { format!("[{0},{0}]", std::str::from_utf8(&buf[..n]).unwrap()) } else { String::from_utf8(buf[..n].to_vec()).unwrap() };
        let mut got = Vec::new();
        prop_assert_eq!(parse_telemetry(text.as_bytes(), |x| got.push(x)), Ok(if array { 2 } else { 1 }));
        prop_assert!(got.iter().all(|x| *x == r));
    }

    #[test]
    fn tb_escape_unescape_round_trips(s in "\\PC{0,30}|[\"\\\\\n\t\u{1}]{0,8}") {
        let mut esc = [0u8; 256];
        let j = JsonStr::escape_into(&s, &mut esc).unwrap();
        let mut out = [0u8; 256];
        prop_assert_eq!(j.unescape_into(&mut out).unwrap(), s.as_str());
    }

    #[test]
    fn tb_parse_never_panics(data in prop::collection::vec(any::<u8>(), 0..96)) {
        thingsboard::fuzz_check(&data);
    }

    #[test]
    fn tb_parse_never_panics_near_grammar(s in "[\\[\\]{}\":, 0-9a-z_\\\\]{0,48}") {
        thingsboard::fuzz_check(s.as_bytes());
    }
}

#[cfg(feature = "alloc")]
proptest! {
    #![proptest_config(config())]

    /// Our precedence agrees with the `semver` crate's, and conversions are lossless.
    #[test]
    fn precedence_matches_semver_crate(a in version_text(), b in version_text()) {
        let (x, y) = (Version::parse(&a).unwrap(), Version::parse(&b).unwrap());
        let (sx, sy) = (semver::Version::from(x), semver::Version::from(y));
        prop_assert_eq!(sx.to_string(), a.as_str());
        prop_assert_eq!(x.cmp_precedence(&y), sx.cmp_precedence(&sy));
        prop_assert_eq!(Version::try_from(&sx), Ok(x));
    }
}
