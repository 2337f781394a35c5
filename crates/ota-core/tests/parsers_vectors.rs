//! The reference test vectors (thingsboard-ota.md §2.3, §11; sming-enigmaiot-ota.md §1.4,
//! §6.5, §8.1, §8.4) through the parsers and emitters.

use ota_core::frame::Kind;
use ota_core::frame::enigma::{EnigmaChunk, EnigmaHeader, EnigmaLine, EnigmaResult, EnigmaStatus};
use ota_core::frame::sming::{
    PatchEncoding, SmingPayload, SmingWarning, device_decode, device_reading,
};
use ota_core::frame::thingsboard::{
    AttributePush, AttributesRequest, AttributesResponse, Deleted, Field, FieldSet, FwState,
    JsonStr, TelemetryRecord, parse_telemetry,
};
use ota_core::topic::Topic;
use ota_core::version::{self, Decision, Version};

#[allow(clippy::unnecessary_wraps)] // compared against `Option` fields
fn s(text: &str) -> Option<JsonStr<'_>> {
    Some(JsonStr::plain(text).unwrap())
}

const TB_RESPONSE: &str = r#"{"shared":{"fw_checksum":"1f825aa2f0020ef7cf91dfa30da4668d791c5d4824fc8e41354b89ec05795ab3","fw_checksum_algorithm":"SHA256","fw_size":10,"fw_title":"demo","fw_version":"1.1"}}"#;

#[test]
fn tb_attribute_request_is_the_sdk_text() {
    let mut buf = [0u8; 128];
    let n = AttributesRequest::emit_for(Kind::Firmware, FieldSet::OFFER, &mut buf).unwrap();
    assert_eq!(
        std::str::from_utf8(&buf[..n]).unwrap(),
        r#"{"sharedKeys":"fw_checksum,fw_checksum_algorithm,fw_size,fw_title,fw_version"}"#
    );
    let req = AttributesRequest::parse(&buf[..n]).unwrap();
    assert_eq!(req.shared_fields(Kind::Firmware), FieldSet::OFFER);
    assert_eq!(req.shared_fields(Kind::Software), FieldSet::EMPTY);
    assert_eq!(req.client_keys, None);
}

#[test]
fn tb_attribute_request_keys_are_not_trimmed() {
    let req = AttributesRequest::parse(br#"{"sharedKeys":"a, b,,fw_title,"}"#).unwrap();
    assert_eq!(req.shared().collect::<Vec<_>>(), ["a", " b", "fw_title"]);
}

#[test]
fn tb_attribute_response_vector_parses_and_emits_byte_exact() {
    let resp = AttributesResponse::parse(TB_RESPONSE.as_bytes()).unwrap();
    assert_eq!(resp.client, None);
    let shared = resp.shared.unwrap();
    let fw = shared.get(Kind::Firmware);
    assert_eq!(fw.title, s("demo"));
    assert_eq!(fw.version, s("1.1"));
    assert_eq!(fw.size, Some(10));
    assert_eq!(fw.checksum_algorithm, s("SHA256"));
    assert_eq!(
        fw.checksum,
        s("1f825aa2f0020ef7cf91dfa30da4668d791c5d4824fc8e41354b89ec05795ab3")
    );
    assert!(shared.get(Kind::Software).is_empty());
    let mut buf = [0u8; 512];
    let n = resp.emit(&mut buf).unwrap();
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), TB_RESPONSE);
}

#[test]
fn tb_empty_response_is_empty_object() {
    let resp = AttributesResponse::parse(b"{}").unwrap();
    assert_eq!(resp, AttributesResponse::default());
    let mut buf = [0u8; 8];
    let n = resp.emit(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"{}");
}

#[test]
fn tb_assignment_push_vector_12() {
    let push = AttributePush::parse(br#"{"deleted":["fw_tag","fw_url"]}"#).unwrap();
    let expected = FieldSet::EMPTY.with(Field::Tag).with(Field::Url);
    assert_eq!(
        push,
        AttributePush::Deleted(Deleted {
            fw: expected,
            sw: FieldSet::EMPTY
        })
    );
    let AttributePush::Deleted(d) = push else {
        unreachable!()
    };
    assert!(!d.withdraws(Kind::Firmware));

    let push = AttributePush::parse(
        br#"{"fw_title":"demo","fw_version":"1.1","fw_size":10,"fw_checksum_algorithm":"SHA256","fw_checksum":"1f825aa2f0020ef7cf91dfa30da4668d791c5d4824fc8e41354b89ec05795ab3"}"#,
    )
    .unwrap();
    let AttributePush::Updated(a) = push else {
        panic!("expected an update, got {push:?}")
    };
    assert_eq!(a.fw.title, s("demo"));
    assert_eq!(a.fw.size, Some(10));
    assert_eq!(a.fw.tag, None);
}

#[test]
fn tb_unassignment_push_vector_13() {
    let json = br#"{"deleted":["fw_title","fw_version","fw_ts","fw_state","fw_size","fw_checksum","fw_checksum_algorithm","fw_url","fw_tag"]}"#;
    let push = AttributePush::parse(json).unwrap();
    assert_eq!(
        push,
        AttributePush::Deleted(Deleted {
            fw: FieldSet::ALL,
            sw: FieldSet::EMPTY
        })
    );
    let AttributePush::Deleted(d) = push else {
        unreachable!()
    };
    assert!(d.withdraws(Kind::Firmware));
    assert!(!d.withdraws(Kind::Software));
    let mut buf = [0u8; 256];
    let n = push.emit(&mut buf).unwrap();
    assert_eq!(
        std::str::from_utf8(&buf[..n]).unwrap(),
        r#"{"deleted":["fw_checksum","fw_checksum_algorithm","fw_size","fw_state","fw_tag","fw_title","fw_ts","fw_url","fw_version"]}"#
    );
}

#[test]
fn tb_push_ignores_unknown_keys_of_any_type() {
    let push = AttributePush::parse(
        br#"{"other":{"a":[1,2,{"b":null}]},"x":1.5e3,"fw_title":"demo","flag":true}"#,
    )
    .unwrap();
    let AttributePush::Updated(a) = push else {
        panic!("{push:?}")
    };
    assert_eq!(a.fw.title, s("demo"));
}

#[test]
fn tb_python_sdk_telemetry_array() {
    let json = br#"[{"current_fw_title":"Initial","current_fw_version":"v0","fw_state":"IDLE","fw_error":""}]"#;
    let mut seen = Vec::new();
    assert_eq!(parse_telemetry(json, |r| seen.push(r)), Ok(1));
    let r = seen[0];
    assert_eq!(r.ts, None);
    assert_eq!(r.fw.current_title, s("Initial"));
    assert_eq!(r.fw.current_version, s("v0"));
    assert_eq!(
        r.fw.state.and_then(|x| FwState::from_wire(x.raw())),
        Some(FwState::Idle)
    );
    assert_eq!(r.fw.error, s(""));
    assert!(r.sw.is_empty());
}

#[test]
fn tb_telemetry_three_shapes() {
    let mut got = Vec::new();
    let obj = br#"{"fw_state":"DOWNLOADING","temperature":21.5}"#;
    assert_eq!(parse_telemetry(obj, |r| got.push(r)), Ok(1));
    let ts = br#"{"ts":1700000000000,"values":{"fw_state":"UPDATED","current_fw_version":"1.1"}}"#;
    assert_eq!(parse_telemetry(ts, |r| got.push(r)), Ok(1));
    let arr = br#"[{"fw_state":"FAILED","fw_error":"Checksum verification failed!"},{"ts":5,"values":{"sw_state":"VERIFIED"}}]"#;
    assert_eq!(parse_telemetry(arr, |r| got.push(r)), Ok(2));
    assert_eq!(got[0].fw.state, Some(FwState::Downloading.json()));
    assert_eq!(
        (got[1].ts, got[1].fw.state),
        (Some(1_700_000_000_000), Some(FwState::Updated.json()))
    );
    assert_eq!(got[1].fw.current_version, s("1.1"));
    assert_eq!(got[2].fw.error, s("Checksum verification failed!"));
    assert_eq!(
        (got[3].ts, got[3].sw.state),
        (Some(5), Some(FwState::Verified.json()))
    );
    assert_eq!(parse_telemetry(b"[]", |_| {}), Ok(0));
}

#[test]
fn tb_telemetry_emit() {
    let mut r = TelemetryRecord::default();
    r.fw.current_title = s("demo");
    r.fw.current_version = s("1.1");
    r.fw.state = Some(FwState::Updated.json());
    let mut buf = [0u8; 256];
    let n = r.emit(&mut buf).unwrap();
    assert_eq!(
        std::str::from_utf8(&buf[..n]).unwrap(),
        r#"{"current_fw_title":"demo","current_fw_version":"1.1","fw_state":"UPDATED"}"#
    );
    r.ts = Some(42);
    let n = r.emit(&mut buf).unwrap();
    assert_eq!(
        std::str::from_utf8(&buf[..n]).unwrap(),
        r#"{"ts":42,"values":{"current_fw_title":"demo","current_fw_version":"1.1","fw_state":"UPDATED"}}"#
    );
}

#[test]
fn tb_escaped_strings_are_kept_and_decodable() {
    let json = br#"[{"fw_error":"bad \"chunk\" \u00e9\ud83d\ude00"}]"#;
    let mut got = None;
    parse_telemetry(json, |r| got = Some(r)).unwrap();
    let err = got.unwrap().fw.error.unwrap();
    assert_eq!(err.raw(), r#"bad \"chunk\" \u00e9\ud83d\ude00"#);
    assert_eq!(err.as_plain(), None);
    let mut buf = [0u8; 64];
    assert_eq!(err.unescape_into(&mut buf).unwrap(), "bad \"chunk\" é😀");
    let mut buf2 = [0u8; 64];
    let esc = JsonStr::escape_into("a\"b\\c\n", &mut buf2).unwrap();
    assert_eq!(esc.raw(), r#"a\"b\\c\n"#);
}

#[test]
fn tb_topics_of_section_2_and_3() {
    let cases = [
        ("v1/devices/me/telemetry", Topic::Telemetry),
        ("v1/devices/me/attributes", Topic::Attributes),
        (
            "v1/devices/me/attributes/request/1",
            Topic::AttributesRequest { id: 1 },
        ),
        (
            "v1/devices/me/attributes/response/1",
            Topic::AttributesResponse { id: 1 },
        ),
        ("v1/devices/me/rpc/request/7", Topic::RpcRequest { id: 7 }),
        ("v1/devices/me/rpc/response/7", Topic::RpcResponse { id: 7 }),
        (
            "v2/fw/error",
            Topic::OtaError {
                kind: Kind::Firmware,
            },
        ),
        (
            "v2/sw/error",
            Topic::OtaError {
                kind: Kind::Software,
            },
        ),
    ];
    for (text, topic) in cases {
        assert_eq!(Topic::parse(text), Ok(topic), "{text}");
        assert_eq!(topic.to_string(), text);
    }
}

#[test]
fn tb_chunk_topic_vector_7_echoes_request_id_verbatim() {
    let t = Topic::parse("v2/fw/request/007/chunk/01").unwrap();
    assert_eq!(
        t.chunk_response().unwrap().to_string(),
        "v2/fw/response/007/chunk/1"
    );
    let t = Topic::parse("v2/sw/request/1/chunk/0").unwrap();
    assert_eq!(
        t.chunk_response().unwrap().to_string(),
        "v2/sw/response/1/chunk/0"
    );
    let Topic::ChunkRequest {
        request_id, chunk, ..
    } = Topic::parse("v2/fw/request/1/chunk/2147483647").unwrap()
    else {
        panic!()
    };
    assert_eq!((request_id.as_str(), chunk), ("1", 2_147_483_647));
}

#[test]
fn sming_topic_and_simple_payload() {
    let t = Topic::parse("a/test/u/4.3").unwrap();
    let Topic::SmingUpdate { app, major, minor } = t else {
        panic!("{t:?}")
    };
    assert_eq!((app.as_str(), major, minor), ("test", 4, 3));
    assert_eq!(t.to_string(), "a/test/u/4.3");

    let payload = [0x03, 0xe9, 0x01, 0x02, 0x03];
    let p = SmingPayload::parse(&payload, PatchEncoding::Varint).unwrap();
    assert_eq!((p.patch, p.body), (3, &payload[1..]));
    let mut buf = [0u8; 16];
    let prefix = p.emit(PatchEncoding::Varint, &mut buf).unwrap();
    assert_eq!(
        (&buf[..prefix.len + p.body.len()], prefix.warning),
        (&payload[..], None)
    );
}

#[test]
fn sming_patch_prefix_table_8_1() {
    // (patch, deployer varint, device reading, 1-byte mode)
    let table: [(u32, &[u8], u32, Option<u8>); 10] = [
        (0, &[0x00], 0, Some(0x00)),
        (3, &[0x03], 3, Some(0x03)),
        (127, &[0x7f], 127, Some(0x7f)),
        (128, &[0x80, 0x01], 1, Some(0x80)),
        (255, &[0xff, 0x01], 128, Some(0xff)),
        (300, &[0xac, 0x02], 46, None),
        (16383, &[0xff, 0x7f], 254, None),
        (16384, &[0x80, 0x80, 0x01], 1, None),
        (1_700_000_000, &[0x80, 0xe2, 0xcf, 0xaa, 0x06], 225, None),
        (1_753_885_171, &[0xf3, 0xd3, 0xa8, 0xc4, 0x06], 312, None),
    ];
    for (patch, varint, device, byte) in table {
        let mut buf = [0u8; 10];
        let out = SmingPayload::emit_prefix(patch, PatchEncoding::Varint, &mut buf).unwrap();
        assert_eq!(&buf[..out.len], varint, "patch {patch}");
        assert_eq!(device_reading(patch), device);
        assert_eq!(device_decode(varint), Some((device, varint.len())));
        let expected_warning = (patch > 127).then_some(SmingWarning::DeviceMisreads {
            device_reads: device,
        });
        assert_eq!(out.warning, expected_warning, "patch {patch}");
        assert_eq!(
            SmingPayload::parse(varint, PatchEncoding::Varint)
                .unwrap()
                .patch,
            patch
        );
        if let Some(b) = byte {
            let out = SmingPayload::emit_prefix(patch, PatchEncoding::Byte, &mut buf).unwrap();
            assert_eq!(&buf[..out.len], &[b]);
            assert_eq!(
                out.warning,
                (b > 0x7f).then_some(SmingWarning::SignedCharRisk)
            );
        }
    }
}

#[test]
fn sming_policy_refuses_equal_patch() {
    let running = Version::parse("4.3.7").unwrap();
    assert_eq!(version::sming(&running, 4, 3, 8), Decision::Update);
    assert_eq!(version::sming(&running, 4, 3, 7), Decision::Same);
    assert_eq!(version::sming(&running, 4, 3, 6), Decision::Older);
    assert_eq!(version::sming(&running, 4, 4, 8), Decision::OtherLine);
}

#[test]
fn thingsboard_and_anti_rollback_policies() {
    assert_eq!(
        version::thingsboard("Initial", "v0", "demo", "1.1"),
        Decision::Update
    );
    assert_eq!(
        version::thingsboard("demo", "1.1", "demo", "1.1"),
        Decision::Same
    );
    assert_eq!(
        version::thingsboard("demo", "1.1", "demo", "1.0"),
        Decision::Update
    );
    let min = Version::parse("2.0.0").unwrap();
    assert_eq!(
        version::anti_rollback(&min, &Version::parse("1.9.9").unwrap()),
        Decision::BelowMinimum
    );
    assert_eq!(
        version::anti_rollback(&min, &Version::parse("2.0.0-rc.1").unwrap()),
        Decision::BelowMinimum
    );
    assert_eq!(
        version::anti_rollback(&min, &Version::parse("2.0.0+b7").unwrap()),
        Decision::Update
    );
}

/// File of §8.4: 500 bytes, byte i = i mod 256.
fn enigma_file() -> Vec<u8> {
    (0..500u32).map(|i| i.to_le_bytes()[0]).collect()
}

const ENIGMA_MD5: [u8; 16] = [
    0xde, 0xc0, 0x59, 0x23, 0x45, 0xac, 0x3d, 0xfa, 0x17, 0x2c, 0x9e, 0xc4, 0x76, 0xa2, 0x4c, 0x75,
];

#[test]
fn enigma_header_vector_8_4() {
    let h = EnigmaHeader::for_image(500, ENIGMA_MD5).unwrap();
    assert_eq!(h.chunks, 3);
    let mut buf = [0u8; 64];
    let n = h.emit(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"0,500,3,dec0592345ac3dfa172c9ec476a24c75");
    assert_eq!(n, 40);
    assert_eq!(EnigmaLine::parse(&buf[..n]), Ok(EnigmaLine::Header(h)));
    assert_eq!(h.chunk_range(3), Some((424, 500)));
    assert_eq!(h.chunk_range(4), None);
}

#[test]
fn enigma_chunk_lines_vector_8_4() {
    let file = enigma_file();
    let h = EnigmaHeader::for_image(500, ENIGMA_MD5).unwrap();
    // (length, prefix, suffix) of each line from the reference.
    let expected: [(usize, &str, &str); 3] = [
        (
            286,
            "1,AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGx",
            "zM3Oz9DR0tM=",
        ),
        (
            286,
            "2,1NXW19jZ2tvc3d7f4OHi4+Tl5ufo6err7O3u7/",
            "oKGio6Slpqc=",
        ),
        (
            106,
            "3,qKmqq6ytrq+wsbKztLW2t7i5uru8vb6/wMHCw8",
            "7e7v8PHy8w==",
        ),
    ];
    for (i, (len, head, tail)) in (1u16..).zip(expected) {
        let (start, end) = h.chunk_range(i).unwrap();
        let data = &file[start as usize..end as usize];
        let mut line = [0u8; 300];
        let n = EnigmaChunk::emit(i, data, &mut line).unwrap();
        let text = std::str::from_utf8(&line[..n]).unwrap();
        assert_eq!(n, len, "chunk {i}");
        assert!(
            text.starts_with(head) && text.ends_with(tail),
            "chunk {i}: {text}"
        );
        let Ok(EnigmaLine::Chunk(c)) = EnigmaLine::parse(&line[..n]) else {
            panic!("chunk {i}")
        };
        assert_eq!(c.index, i);
        let mut raw = [0u8; 212];
        assert_eq!(c.decode_into(&mut raw).unwrap(), data);
    }
}

#[test]
fn enigma_result_codes_6_5() {
    let texts = [
        "OTA Started",
        "OTA Start error",
        "OTA check OK",
        "OTA check failed",
        "OTA out of sequence error",
        "OTA timeout",
        "OTA finished OK",
    ];
    for (code, text) in (0u8..).zip(texts) {
        let status = EnigmaStatus::from_code(code).unwrap();
        assert_eq!((status.code(), status.text()), (code, text));
    }
    let json = br#"{"last_chunk":41,"result":"OTA out of sequence error","status":4}"#;
    let r = EnigmaResult::parse(json).unwrap();
    assert_eq!(
        r,
        EnigmaResult {
            status: EnigmaStatus::OutOfSequence,
            last_chunk: Some(41)
        }
    );
    let mut buf = [0u8; 128];
    let n = r.emit(&mut buf).unwrap();
    assert_eq!(&buf[..n], json);
    let ok = EnigmaResult::parse(br#"{"result":"OTA finished OK","status":6}"#).unwrap();
    assert_eq!(
        ok,
        EnigmaResult {
            status: EnigmaStatus::Finished,
            last_chunk: None
        }
    );
}

#[test]
fn enigma_topics() {
    let t = Topic::parse("enigmaiot/aa:bb:cc:dd:ee:ff/set/ota").unwrap();
    let Topic::EnigmaOta { net, node } = t else {
        panic!("{t:?}")
    };
    assert_eq!(net.as_str(), "enigmaiot");
    assert!(node.is_mac());
    for text in [
        "enigmaiot/aa:bb:cc:dd:ee:ff/set/ota",
        "enigmaiot/kitchen/result/ota",
        "enigmaiot/kitchen/set/sleeptime",
        "enigmaiot/kitchen/result/sleeptime",
    ] {
        assert_eq!(Topic::parse(text).unwrap().to_string(), text);
    }
    let Topic::EnigmaOtaResult { node, .. } = Topic::parse("enigmaiot/kitchen/result/ota").unwrap()
    else {
        panic!()
    };
    assert!(!node.is_mac());
}

#[test]
fn version_formats_canonically() {
    for text in [
        "0.0.0",
        "4.3.7",
        "1.0.0-alpha.1",
        "1.0.0-0.3.7",
        "1.0.0-x.7.z.92+exp.sha.5114f85",
        "1.0.0+001",
    ] {
        assert_eq!(Version::parse(text).unwrap().to_string(), text);
    }
}
