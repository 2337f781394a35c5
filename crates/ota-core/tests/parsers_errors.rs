//! Bad input to every parser: truncated, oversized, non-UTF-8, non-numeric, overflowing.
//! Each case asserts the exact typed error.

use ota_core::frame::enigma::{
    EnigmaChunk, EnigmaError, EnigmaHeader, EnigmaLine, EnigmaResult, LineField,
};
use ota_core::frame::sming::{PatchEncoding, SmingError, SmingPayload};
use ota_core::frame::thingsboard::{
    AttributePush, AttributesResponse, JsonError, JsonStr, MAX_NAME_LEN, parse_telemetry,
};
use ota_core::topic::{Field, MAX_INT32, Topic, TopicError};
use ota_core::version::{Part, Version, VersionError};

// ---- version

#[test]
fn version_patch_overflow_names_the_field() {
    let e = Version::parse("4.3.99999999999").unwrap_err();
    assert_eq!(
        e,
        VersionError::Overflow {
            part: Part::Patch,
            offset: 4
        }
    );
    assert_eq!(e.to_string(), "patch number at offset 4 exceeds 4294967295");
}

#[test]
fn version_major_overflow() {
    assert_eq!(
        Version::parse("4294967296.0.0"),
        Err(VersionError::Overflow {
            part: Part::Major,
            offset: 0
        })
    );
    assert_eq!(
        Version::parse("4294967295.0.0").map(|v| v.major),
        Ok(u32::MAX)
    );
}

#[test]
fn version_truncated() {
    assert_eq!(Version::parse(""), Err(VersionError::Empty));
    assert_eq!(
        Version::parse("4"),
        Err(VersionError::Missing { part: Part::Minor })
    );
    assert_eq!(
        Version::parse("4.3"),
        Err(VersionError::Missing { part: Part::Patch })
    );
    assert_eq!(
        Version::parse("4.3."),
        Err(VersionError::Missing { part: Part::Patch })
    );
    assert_eq!(
        Version::parse("4.3.1-"),
        Err(VersionError::EmptyIdentifier {
            part: Part::Pre,
            offset: 6
        })
    );
    assert_eq!(
        Version::parse("4.3.1+"),
        Err(VersionError::EmptyIdentifier {
            part: Part::Build,
            offset: 6
        })
    );
}

#[test]
fn version_non_numeric() {
    assert_eq!(
        Version::parse("v1.2.3"),
        Err(VersionError::NotNumeric {
            part: Part::Major,
            found: 'v',
            offset: 0
        })
    );
    assert_eq!(
        Version::parse("1.x.3"),
        Err(VersionError::NotNumeric {
            part: Part::Minor,
            found: 'x',
            offset: 2
        })
    );
    assert_eq!(
        Version::parse("1.2.3.4"),
        Err(VersionError::NotNumeric {
            part: Part::Patch,
            found: '.',
            offset: 5
        })
    );
    assert_eq!(
        Version::parse("1.2.3-rc_1"),
        Err(VersionError::InvalidCharacter {
            part: Part::Pre,
            found: '_',
            offset: 8
        })
    );
}

#[test]
fn version_leading_zeros() {
    assert_eq!(
        Version::parse("01.2.3"),
        Err(VersionError::LeadingZero {
            part: Part::Major,
            offset: 0
        })
    );
    assert_eq!(
        Version::parse("1.2.3-rc.01"),
        Err(VersionError::LeadingZero {
            part: Part::Pre,
            offset: 9
        })
    );
    // Build metadata may have leading zeros (semver §10).
    assert!(Version::parse("1.2.3+001").is_ok());
}

#[test]
fn version_non_utf8() {
    assert_eq!(
        Version::parse_bytes(b"1.2.\xff"),
        Err(VersionError::NotUtf8 { offset: 4 })
    );
}

// ---- topic

#[test]
fn topic_chunk_index_2_pow_40_overflows() {
    assert_eq!(
        Topic::parse("v2/fw/request/1/chunk/1099511627776"),
        Err(TopicError::Overflow {
            field: Field::Chunk,
            digits: 13,
            max: MAX_INT32
        })
    );
    assert_eq!(
        Topic::parse("v2/fw/request/1/chunk/2147483648"),
        Err(TopicError::Overflow {
            field: Field::Chunk,
            digits: 10,
            max: MAX_INT32
        })
    );
}

#[test]
fn topic_attribute_id_must_be_int32() {
    assert_eq!(
        Topic::parse("v1/devices/me/attributes/request/2147483648"),
        Err(TopicError::Overflow {
            field: Field::AttributeRequestId,
            digits: 10,
            max: MAX_INT32
        })
    );
    assert_eq!(
        Topic::parse("v1/devices/me/rpc/response/-1"),
        Err(TopicError::NotNumeric {
            field: Field::RpcRequestId,
            found: '-'
        })
    );
}

#[test]
fn topic_non_numeric() {
    assert_eq!(
        Topic::parse("v2/fw/request/1/chunk/x"),
        Err(TopicError::NotNumeric {
            field: Field::Chunk,
            found: 'x'
        })
    );
    assert_eq!(
        Topic::parse("v2/fw/request/+/chunk/0"),
        Err(TopicError::NotNumeric {
            field: Field::ChunkRequestId,
            found: '+'
        })
    );
    assert_eq!(
        Topic::parse("a/test/u/4.x"),
        Err(TopicError::NotNumeric {
            field: Field::SmingMinor,
            found: 'x'
        })
    );
    assert_eq!(
        Topic::parse("a/test/u/43"),
        Err(TopicError::NotNumeric {
            field: Field::SmingMinor,
            found: '\0'
        })
    );
}

#[test]
fn topic_truncated() {
    assert_eq!(Topic::parse(""), Err(TopicError::Empty));
    assert_eq!(
        Topic::parse("v1/devices/me"),
        Err(TopicError::Unknown { levels: 3 })
    );
    assert_eq!(
        Topic::parse("v2/fw/request/1/chunk/"),
        Err(TopicError::NotNumeric {
            field: Field::Chunk,
            found: '\0'
        })
    );
    assert_eq!(
        Topic::parse("v1/devices/me/attributes/request/"),
        Err(TopicError::NotNumeric {
            field: Field::AttributeRequestId,
            found: '\0'
        })
    );
}

#[test]
fn topic_oversized_and_unknown() {
    let long = "a/".repeat(100);
    assert_eq!(
        Topic::parse(&long),
        Err(TopicError::Unknown { levels: 101 })
    );
    assert_eq!(
        Topic::parse("v2/xx/error"),
        Err(TopicError::Unknown { levels: 3 })
    );
    assert_eq!(
        Topic::parse("v2/fw/response/+"),
        Err(TopicError::Unknown { levels: 4 })
    );
}

#[test]
fn topic_wildcards_and_empty_names() {
    assert_eq!(
        Topic::parse("a/+/u/4.3"),
        Err(TopicError::InvalidName {
            field: Field::SmingApp
        })
    );
    assert_eq!(
        Topic::parse("net/#/set/ota"),
        Err(TopicError::InvalidName {
            field: Field::EnigmaNode
        })
    );
    assert_eq!(
        Topic::parse("/node/set/ota"),
        Err(TopicError::InvalidName {
            field: Field::EnigmaNetwork
        })
    );
}

#[test]
fn topic_non_utf8() {
    assert_eq!(
        Topic::parse_bytes(b"v1/devices/\xc3"),
        Err(TopicError::NotUtf8 { offset: 11 })
    );
}

// ---- Sming

#[test]
fn sming_varint_of_11_bytes_is_too_long() {
    let mut payload = [0x80u8; 12];
    payload[10] = 0x01;
    assert_eq!(
        SmingPayload::parse(&payload, PatchEncoding::Varint),
        Err(SmingError::VarintTooLong)
    );
}

#[test]
fn sming_varint_above_u32_overflows() {
    // 2^32 = 80 80 80 80 10
    let payload = [0x80, 0x80, 0x80, 0x80, 0x10, 0xaa];
    assert_eq!(
        SmingPayload::parse(&payload, PatchEncoding::Varint),
        Err(SmingError::PatchOverflow { len: 5 })
    );
    // 10-byte varint with bits beyond 64.
    let payload = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
    assert_eq!(
        SmingPayload::parse(&payload, PatchEncoding::Varint),
        Err(SmingError::PatchOverflow { len: 10 })
    );
}

#[test]
fn sming_truncated() {
    assert_eq!(
        SmingPayload::parse(&[], PatchEncoding::Varint),
        Err(SmingError::Empty)
    );
    assert_eq!(
        SmingPayload::parse(&[], PatchEncoding::Byte),
        Err(SmingError::Empty)
    );
    assert_eq!(
        SmingPayload::parse(&[0x80, 0x81], PatchEncoding::Varint),
        Err(SmingError::TruncatedVarint { len: 2 })
    );
}

#[test]
fn sming_emit_errors() {
    let mut buf = [0u8; 1];
    assert_eq!(
        SmingPayload::emit_prefix(256, PatchEncoding::Byte, &mut buf),
        Err(SmingError::PatchTooLargeForByte { patch: 256 })
    );
    assert_eq!(
        SmingPayload::emit_prefix(300, PatchEncoding::Varint, &mut buf),
        Err(SmingError::BufferTooSmall {
            needed: 2,
            available: 1
        })
    );
}

// ---- EnigmaIoT

#[test]
fn enigma_rejects_images_needing_more_than_65535_chunks() {
    assert_eq!(
        EnigmaHeader::for_image(65_535 * 212 + 1, [0; 16]),
        Err(EnigmaError::TooManyChunks {
            size: 65_535 * 212 + 1,
            needed: 65_536
        })
    );
    assert!(EnigmaHeader::for_image(65_535 * 212, [0; 16]).is_ok());
    assert_eq!(
        EnigmaHeader::for_image(0, [0; 16]),
        Err(EnigmaError::EmptyImage)
    );
}

#[test]
fn enigma_chunk_index_overflow() {
    assert_eq!(
        EnigmaLine::parse(b"1099511627776,AAAA"),
        Err(EnigmaError::Overflow {
            field: LineField::Index,
            max: 65_535
        })
    );
    assert_eq!(
        EnigmaLine::parse(b"65536,AAAA"),
        Err(EnigmaError::Overflow {
            field: LineField::Index,
            max: 65_535
        })
    );
}

#[test]
fn enigma_oversized_chunk() {
    // 213 bytes = 71 full groups = 284 base64 chars without padding.
    let mut line = b"1,".to_vec();
    line.extend(std::iter::repeat_n(b'A', 284));
    assert_eq!(
        EnigmaLine::parse(&line),
        Err(EnigmaError::ChunkTooLarge { len: 213 })
    );
    let mut out = [0u8; 400];
    assert_eq!(
        EnigmaChunk::emit(0, &[1], &mut out),
        Err(EnigmaError::IndexZero)
    );
    assert_eq!(
        EnigmaChunk::emit(1, &[0u8; 213], &mut out),
        Err(EnigmaError::ChunkTooLarge { len: 213 })
    );
}

#[test]
fn enigma_truncated_lines() {
    assert_eq!(EnigmaLine::parse(b""), Err(EnigmaError::Empty));
    assert_eq!(
        EnigmaLine::parse(b"0"),
        Err(EnigmaError::Missing {
            field: LineField::Data
        })
    );
    assert_eq!(
        EnigmaLine::parse(b"0,500"),
        Err(EnigmaError::Missing {
            field: LineField::Chunks
        })
    );
    assert_eq!(
        EnigmaLine::parse(b"0,500,3"),
        Err(EnigmaError::Missing {
            field: LineField::Md5
        })
    );
    assert_eq!(
        EnigmaLine::parse(b"0,500,3,dec0592345ac3dfa172c9ec476a24c7"),
        Err(EnigmaError::Md5Length { len: 31 })
    );
    assert_eq!(
        EnigmaLine::parse(b"1,AAA"),
        Err(EnigmaError::Base64 { offset: 0 })
    );
    assert_eq!(
        EnigmaLine::parse(b"1,"),
        Err(EnigmaError::EmptyChunk { index: 1 })
    );
}

#[test]
fn enigma_non_numeric_and_bad_md5() {
    assert_eq!(
        EnigmaLine::parse(b"x,AAAA"),
        Err(EnigmaError::NotNumeric {
            field: LineField::Index,
            found: b'x'
        })
    );
    assert_eq!(
        EnigmaLine::parse(b"0,5OO,3,dec0592345ac3dfa172c9ec476a24c75"),
        Err(EnigmaError::NotNumeric {
            field: LineField::Size,
            found: b'O'
        })
    );
    assert_eq!(
        EnigmaLine::parse(b"0,500,3,DEC0592345ac3dfa172c9ec476a24c75"),
        Err(EnigmaError::Md5NotLowerHex {
            offset: 0,
            found: b'D'
        })
    );
    assert_eq!(
        EnigmaLine::parse(b"0,500,4,dec0592345ac3dfa172c9ec476a24c75"),
        Err(EnigmaError::ChunkCountMismatch {
            size: 500,
            chunks: 4,
            expected: 3
        })
    );
    assert_eq!(
        EnigmaLine::parse(b"0,500,3,dec0592345ac3dfa172c9ec476a24c75,x"),
        Err(EnigmaError::TrailingField)
    );
    assert_eq!(
        EnigmaLine::parse(b"0,4294967296,3,dec0592345ac3dfa172c9ec476a24c75"),
        Err(EnigmaError::Overflow {
            field: LineField::Size,
            max: u32::MAX
        })
    );
}

#[test]
fn enigma_non_canonical_base64() {
    // "AB==" leaves non-zero bits in the dropped part.
    assert_eq!(
        EnigmaLine::parse(b"1,AB=="),
        Err(EnigmaError::Base64 { offset: 1 })
    );
    assert_eq!(
        EnigmaLine::parse(b"1,A=AA"),
        Err(EnigmaError::Base64 { offset: 1 })
    );
    assert_eq!(
        EnigmaLine::parse(b"1,AA\xffA"),
        Err(EnigmaError::Base64 { offset: 2 })
    );
}

#[test]
fn enigma_result_errors() {
    assert_eq!(
        EnigmaResult::parse(br#"{"result":"?","status":9}"#),
        Err(EnigmaError::UnknownStatus(9))
    );
    assert_eq!(
        EnigmaResult::parse(br#"{"status":4}"#),
        Err(EnigmaError::MissingLastChunk)
    );
    assert_eq!(
        EnigmaResult::parse(br#"{"status":"4"}"#),
        Err(EnigmaError::Json(JsonError::Syntax(
            serde_json_core::de::Error::InvalidType
        )))
    );
}

// ---- ThingsBoard JSON

#[test]
fn tb_300_byte_title_is_too_long() {
    let json = format!(r#"{{"fw_title":"{}","fw_version":"1"}}"#, "t".repeat(300));
    assert_eq!(
        AttributePush::parse(json.as_bytes()),
        Err(JsonError::TooLong {
            key: "fw_title",
            len: 300,
            max: MAX_NAME_LEN
        })
    );
    let json = format!(r#"{{"shared":{{"sw_version":"{}"}}}}"#, "1".repeat(256));
    assert_eq!(
        AttributesResponse::parse(json.as_bytes()),
        Err(JsonError::TooLong {
            key: "sw_version",
            len: 256,
            max: MAX_NAME_LEN
        })
    );
}

#[test]
fn tb_truncated_json() {
    use serde_json_core::de::Error as E;
    assert_eq!(
        AttributePush::parse(br#"{"fw_title":"de"#),
        Err(JsonError::Syntax(E::EofWhileParsingString))
    );
    assert_eq!(
        AttributesResponse::parse(b""),
        Err(JsonError::Syntax(E::EofWhileParsingValue))
    );
    assert_eq!(
        parse_telemetry(br#"[{"fw_state":"IDLE"}"#, |_| {}),
        Err(JsonError::Syntax(E::EofWhileParsingList))
    );
}

#[test]
fn tb_wrong_types_are_syntax_errors() {
    use serde_json_core::de::Error as E;
    assert_eq!(
        AttributePush::parse(br#"{"fw_size":"ten"}"#),
        Err(JsonError::Syntax(E::InvalidType))
    );
    assert_eq!(
        AttributePush::parse(br#"{"fw_size":99999999999999999999}"#),
        Err(JsonError::Syntax(E::InvalidNumber))
    );
    assert_eq!(
        parse_telemetry(br#"{"ts":-1,"values":{}}"#, |_| {}),
        Err(JsonError::Syntax(E::InvalidNumber))
    );
}

#[test]
fn tb_deep_nesting_is_rejected_before_parsing() {
    let mut json = br#"{"x":"#.to_vec();
    json.extend(std::iter::repeat_n(b'[', 100_000));
    assert_eq!(AttributePush::parse(&json), Err(JsonError::TooDeep));
    assert_eq!(parse_telemetry(&json, |_| {}), Err(JsonError::TooDeep));
}

#[test]
fn tb_non_utf8_string() {
    use serde_json_core::de::Error as E;
    let r = AttributePush::parse(b"{\"fw_title\":\"\xff\"}");
    assert_eq!(r, Err(JsonError::Syntax(E::InvalidUnicodeCodePoint)));
}

#[test]
fn tb_emit_into_small_buffer() {
    let push = AttributePush::parse(br#"{"fw_title":"demo"}"#).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(
        push.emit(&mut buf),
        Err(JsonError::BufferTooSmall { available: 8 })
    );
    assert_eq!(JsonStr::plain("a\"b"), Err(JsonError::NeedsEscape));
}

#[test]
fn tb_bad_escapes_are_reported_on_unescape() {
    let mut got = None;
    parse_telemetry(br#"{"fw_error":"x\q"}"#, |r| got = Some(r)).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        got.unwrap().fw.error.unwrap().unescape_into(&mut buf),
        Err(JsonError::InvalidEscape { offset: 1 })
    );
}
