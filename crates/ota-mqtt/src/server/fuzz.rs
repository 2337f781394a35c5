//! The bytes a device sends, under a fuzzer: the protocol core's parser as the endpoint feeds
//! it (in the reads a socket would deliver), then the parsers a session applies to each packet
//! (topic, chunk size, telemetry, client attributes, attribute request, subscription filters).
//! No socket, no runtime, no service.

use mqtt_protocol_core::mqtt::connection::Event;
use mqtt_protocol_core::mqtt::packet::Packet;
use ota_core::frame::thingsboard::AttributesRequest;
use ota_core::topic::Topic;
use ota_server::service::parse_client_attributes;

use super::link::{feed, new_connection};
use super::session::telemetry_records;
use crate::chunk::parse_size;
use crate::filter::Filter;

/// Feeds `data[1..]` to a fresh server-side connection as one device's byte stream, split
/// into two reads at `data[0]`, and runs every packet it yields through the session's
/// parsers. Panics only if a parser panics or the feeding loop stops short of the input
/// without a protocol error.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let cut = usize::from(split).min(stream.len());
    let (first, second) = stream.split_at(cut);
    let mut conn = new_connection(crate::server::DEFAULT_MAX_PACKET_SIZE, 100);
    for read in [first, second] {
        let mut left = read;
        while !left.is_empty() {
            let (events, used) = feed(&mut conn, left);
            assert!(used <= left.len(), "took {used} of {} bytes", left.len());
            let failed = events
                .iter()
                .any(|e| matches!(e, Event::RequestClose | Event::NotifyError(_)));
            for event in events {
                if let Event::NotifyPacketReceived(p) = event {
                    inspect(&p);
                }
            }
            if failed {
                // The endpoint closes the connection here: later bytes are never parsed.
                return;
            }
            assert!(used > 0, "no progress on {} bytes", left.len());
            left = &left[used..];
        }
    }
}

/// What a session would parse of one packet.
fn inspect(p: &Packet) {
    let (topic, payload) = match p {
        Packet::V3_1_1Publish(p) => (p.topic_name(), p.payload().as_slice()),
        Packet::V5_0Publish(p) => (p.topic_name(), p.payload().as_slice()),
        Packet::V3_1_1Subscribe(s) => {
            for e in s.entries() {
                let _ = Filter::parse(e.topic_filter());
            }
            return;
        }
        Packet::V5_0Subscribe(s) => {
            for e in s.entries() {
                let _ = Filter::parse(e.topic_filter());
            }
            return;
        }
        _ => return,
    };
    match Topic::parse(topic) {
        Ok(Topic::ChunkRequest { .. }) => {
            let _ = parse_size(payload);
        }
        Ok(Topic::Telemetry) => {
            if let Ok(body) = serde_json::from_slice(payload) {
                let _ = telemetry_records(&body);
            }
        }
        Ok(Topic::Attributes) => {
            let _ = parse_client_attributes(payload);
        }
        Ok(Topic::AttributesRequest { .. }) => {
            let _ = AttributesRequest::parse(payload);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use mqtt_protocol_core::mqtt::packet::{Qos, v3_1_1};
    use proptest::prelude::*;

    use super::*;

    /// A 3.1.1 CONNECT with a token, as a device sends it.
    fn connect() -> Vec<u8> {
        v3_1_1::Connect::builder()
            .client_id("")
            .expect("client id")
            .user_name("TOKEN")
            .expect("user name")
            .clean_session(true)
            .build()
            .expect("connect")
            .to_continuous_buffer()
    }

    fn publish(topic: &str, payload: &[u8], id: u16) -> Vec<u8> {
        v3_1_1::Publish::builder()
            .topic_name(topic)
            .expect("topic")
            .qos(Qos::AtLeastOnce)
            .packet_id(id)
            .payload(payload.to_vec())
            .build()
            .expect("publish")
            .to_continuous_buffer()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Round trip: PUBLISH packets written by the protocol crate, delivered in reads cut
        /// at arbitrary places, come out of the endpoint's feeding loop whole and in order.
        #[test]
        fn publishes_survive_any_read_boundaries(
            packets in proptest::collection::vec(
                ("[a-z0-9/]{1,40}", proptest::collection::vec(any::<u8>(), 0..600)),
                1..8,
            ),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
        ) {
            let mut stream = connect();
            for (i, (topic, payload)) in packets.iter().enumerate() {
                stream.extend(publish(topic, payload, u16::try_from(i + 1).unwrap()));
            }
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len())).collect();
            at.push(0);
            at.push(stream.len());
            at.sort_unstable();
            at.dedup();
            let mut conn = new_connection(crate::server::DEFAULT_MAX_PACKET_SIZE, 100);
            let mut got = Vec::new();
            for w in at.windows(2) {
                let mut left = &stream[w[0]..w[1]];
                while !left.is_empty() {
                    let (events, used) = feed(&mut conn, left);
                    for event in events {
                        match event {
                            Event::NotifyPacketReceived(Packet::V3_1_1Publish(p)) => got.push((
                                p.topic_name().to_owned(),
                                p.payload().as_slice().to_vec(),
                            )),
                            Event::NotifyError(e) => prop_assert!(false, "protocol error {e:?}"),
                            _ => {}
                        }
                    }
                    prop_assert!(used > 0);
                    left = &left[used..];
                }
            }
            prop_assert_eq!(got, packets);
        }

        /// Any bytes, cut anywhere: never a panic.
        #[test]
        fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            fuzz_check(&data);
        }
    }

    #[test]
    fn a_malformed_stream_stops_at_the_error() {
        // CONNECT, then a remaining length with a fifth continuation byte (malformed).
        let mut stream = connect();
        stream.extend([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]);
        stream.extend(publish("v1/devices/me/telemetry", b"{}", 1));
        let mut conn = new_connection(crate::server::DEFAULT_MAX_PACKET_SIZE, 100);
        let (events, used) = feed(&mut conn, &stream);
        assert!(used < stream.len(), "the bytes after the error are left");
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::NotifyError(_) | Event::RequestClose)),
            "the malformed length is reported"
        );
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Event::NotifyPacketReceived(Packet::V3_1_1Publish(_)))),
            "nothing after the error is parsed"
        );
    }
}
