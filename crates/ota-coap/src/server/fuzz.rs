//! The request handler under a fuzzer: one datagram in, at most one datagram out, against an
//! in-memory [`DeviceApi`] whose calls complete at once (so no runtime and no socket).

use std::future::Future;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;
use bytes::Bytes;
use coap_lite::{MessageType, Packet};
use ota_core::checksum::ChecksumAlgorithm;
use ota_server::events::AssignmentEvent;
use ota_server::model::{
    Device, DeviceId, OtaPackage, PackageData, PackageId, PackageSource, PackageType, ProfileId,
};
use ota_server::service::{DeviceApi, ServiceError, chunk_of};
use serde_json::{Map, Value};
use tokio::sync::broadcast;

/// Device `TOKEN` with firmware `demo`/`1.1` of 3000 bytes; nothing else exists.
struct Fixed {
    device: Device,
    package: OtaPackage,
    bytes: Bytes,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let profile = ProfileId::new_random();
        let bytes: Bytes = (0..3000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        let package = OtaPackage {
            id: PackageId::new_random(),
            created_time: 0,
            profile_id: profile,
            package_type: PackageType::Firmware,
            title: "demo".into(),
            version: "1.1".into(),
            tag: None,
            source: PackageSource::Data(PackageData {
                blob_key: "k".into(),
                file_name: "demo.bin".into(),
                content_type: "application/octet-stream".into(),
                size: 3000,
                checksum_algorithm: ChecksumAlgorithm::Sha256,
                checksum: String::new(),
            }),
            sming_app_id: None,
            additional_info: None,
        };
        let device = Device {
            id: DeviceId::new_random(),
            created_time: 0,
            name: "d".into(),
            profile_id: profile,
            access_token: "TOKEN".into(),
            firmware_id: Some(package.id),
            software_id: None,
            enigma: None,
        };
        Fixed {
            device,
            package,
            bytes,
        }
    })
}

#[async_trait]
impl DeviceApi for Fixed {
    async fn authenticate(&self, token: &str) -> Result<Option<Device>, ServiceError> {
        Ok((token == self.device.access_token).then(|| self.device.clone()))
    }
    async fn assigned_package(
        &self,
        _: &Device,
        t: PackageType,
    ) -> Result<Option<OtaPackage>, ServiceError> {
        Ok((t == PackageType::Firmware).then(|| self.package.clone()))
    }
    async fn shared_attributes(&self, _: &Device) -> Result<Map<String, Value>, ServiceError> {
        let mut m = Map::new();
        m.insert("fw_title".into(), "demo".into());
        m.insert("fw_version".into(), "1.1".into());
        m.insert("fw_size".into(), 3000.into());
        Ok(m)
    }
    async fn read_chunk(
        &self,
        _: &OtaPackage,
        index: u64,
        size: u64,
    ) -> Result<Bytes, ServiceError> {
        Ok(chunk_of(&self.bytes, index, size))
    }
    async fn record_telemetry(
        &self,
        _: &Device,
        _: &Map<String, Value>,
    ) -> Result<(), ServiceError> {
        Ok(())
    }
    fn subscribe(&self, _: DeviceId) -> broadcast::Receiver<AssignmentEvent> {
        broadcast::channel(1).1
    }
}

/// Answers `datagram` with the server's request handler and checks the answer: it decodes,
/// an ACK carries the request's message id, and a response never exceeds one 1024-byte block
/// plus options. Panics only when an invariant breaks.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    let Some(out) = respond_now(data) else { return };
    let reply =
        Packet::from_bytes(&out).unwrap_or_else(|e| panic!("our response does not decode: {e:?}"));
    assert!(
        out.len() <= Packet::MAX_SIZE,
        "response of {} bytes",
        out.len()
    );
    assert!(
        reply.payload.len() <= 1024 || reply.header.code.to_string().starts_with('4'),
        "payload too long"
    );
    if reply.header.get_type() == MessageType::Acknowledgement
        || reply.header.get_type() == MessageType::Reset
    {
        let mid = data.get(2..4).map(|b| u16::from_be_bytes([b[0], b[1]]));
        assert_eq!(
            Some(reply.header.message_id),
            mid,
            "ACK/RST must echo the message id"
        );
    }
}

/// The handler's answer, computed synchronously (the in-memory service never waits).
pub(crate) fn respond_now(data: &[u8]) -> Option<Vec<u8>> {
    let fut = pin!(super::respond(fixed(), data, 1));
    ready(fut)
}

fn ready<T>(mut fut: std::pin::Pin<&mut impl Future<Output = T>>) -> T {
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the in-memory service never waits"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn answers_a_download_and_drops_junk() {
        // CON GET /fw/TOKEN?size=4&chunk=1, message id 0x0102, token 0xAA.
        let mut d = vec![0x41, 0x01, 0x01, 0x02, 0xAA, 0xB2, b'f', b'w', 0x05];
        d.extend_from_slice(b"TOKEN");
        d.push(0x46);
        d.extend_from_slice(b"size=4");
        d.push(0x07);
        d.extend_from_slice(b"chunk=1");
        let out = respond_now(&d).expect("answered");
        let p = Packet::from_bytes(&out).expect("decodes");
        assert_eq!(
            (p.header.message_id, p.get_token(), &p.payload[..]),
            (0x0102, &[0xAA][..], &[4u8, 5, 6, 7][..])
        );
        fuzz_check(&d);
        assert_eq!(respond_now(&[]), None);
        assert_eq!(respond_now(&[0x40, 0x01]), None);
        // Version 2 is ignored; a truncated CON option gets a Reset.
        assert_eq!(respond_now(&[0x80, 0x01, 0, 1]), None);
        assert_eq!(
            respond_now(&[0x40, 0x01, 0, 1, 0xBD]),
            Some(vec![0x70, 0, 0, 1])
        );
        // A NON with a bad token length is dropped.
        assert_eq!(respond_now(&[0x59, 0x01, 0, 1]), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            fuzz_check(&data);
        }

        #[test]
        fn never_panics_on_coap_shaped_bytes(tail in proptest::collection::vec(any::<u8>(), 0..120), t in 0u8..2, tkl in 0u8..9) {
            let mut d = vec![0x40 | (t << 4) | tkl, 0x01, 0x12, 0x34];
            d.extend_from_slice(&tail);
            fuzz_check(&d);
        }
    }
}
