//! The long connection's wire format: `pbbp2.Frame` (see `pbbp2.proto` next
//! to this file), written out with prost's derive instead of generated at
//! build time so that building needs no `protoc`. The vectors in
//! `tests/vectors/pbbp2.json`, encoded by the Python SDK's generated module,
//! pin both directions byte for byte (`tests::python_sdk_vectors`).

use prost::Message;

/// `Frame.method` of pings and pongs.
pub const METHOD_CONTROL: i32 = 0;
/// `Frame.method` of events and cards.
pub const METHOD_DATA: i32 = 1;

#[derive(Clone, PartialEq, Message)]
pub struct Header {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Frame {
    #[prost(uint64, required, tag = "1")]
    pub seq_id: u64,
    #[prost(uint64, required, tag = "2")]
    pub log_id: u64,
    #[prost(int32, required, tag = "3")]
    pub service: i32,
    #[prost(int32, required, tag = "4")]
    pub method: i32,
    #[prost(message, repeated, tag = "5")]
    pub headers: Vec<Header>,
    #[prost(string, optional, tag = "6")]
    pub payload_encoding: Option<String>,
    #[prost(string, optional, tag = "7")]
    pub payload_type: Option<String>,
    #[prost(bytes = "vec", optional, tag = "8")]
    pub payload: Option<Vec<u8>>,
    #[prost(string, optional, tag = "9")]
    pub log_id_new: Option<String>,
}

/// What a frame carries, from its `type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Event,
    Card,
    Ping,
    Pong,
    Other,
}

impl Kind {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Event => "event",
            Kind::Card => "card",
            Kind::Ping => "ping",
            Kind::Pong => "pong",
            Kind::Other => "other",
        }
    }
}

impl Frame {
    pub fn decode_bytes(bytes: &[u8]) -> Result<Frame, prost::DecodeError> {
        Frame::decode(bytes)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.key == key)
            .map(|h| h.value.as_str())
    }

    pub fn kind(&self) -> Kind {
        match (self.method, self.header("type")) {
            (METHOD_DATA, Some("event")) => Kind::Event,
            (METHOD_DATA, Some("card")) => Kind::Card,
            (METHOD_CONTROL, Some("ping")) => Kind::Ping,
            (METHOD_CONTROL, Some("pong")) => Kind::Pong,
            _ => Kind::Other,
        }
    }

    /// The ping every SDK sends: a control frame for the URL's `service_id`
    /// with only a `type` header.
    pub fn ping(service: i32) -> Frame {
        Frame {
            seq_id: 0,
            log_id: 0,
            service,
            method: METHOD_CONTROL,
            headers: vec![header("type", "ping")],
            payload_encoding: None,
            payload_type: None,
            payload: None,
            log_id_new: None,
        }
    }

    /// The answer to an event frame: the same frame (ids, service, method
    /// and every header, so `trace_id` and `instance_id` route it back) plus
    /// `biz_rt`, the handling time in ms, with `{"code":N}` as payload.
    pub fn ack(&self, code: u16, biz_rt_ms: u64) -> Frame {
        let mut headers = self.headers.clone();
        headers.retain(|h| h.key != "biz_rt");
        headers.push(header("biz_rt", &biz_rt_ms.to_string()));
        Frame {
            headers,
            payload: Some(format!("{{\"code\":{code}}}").into_bytes()),
            ..self.clone()
        }
    }
}

pub fn header(key: &str, value: &str) -> Header {
    Header {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).expect("hex")
    }

    /// Frames encoded by `lark_oapi.ws.pb.pbbp2_pb2` (tests/vectors/gen.py):
    /// decoding them gives the documented fields, and encoding the decoded
    /// frame gives the same bytes back.
    #[test]
    fn python_sdk_vectors() {
        let text = include_str!("../../tests/vectors/pbbp2.json");
        let vectors: Value = serde_json::from_str(text).expect("vectors are JSON");
        let list = vectors["frames"].as_array().expect("frames");
        assert!(list.len() >= 3);
        for v in list {
            let bytes = unhex(v["hex"].as_str().expect("hex"));
            let frame = Frame::decode_bytes(&bytes).expect("decodes");
            assert_eq!(frame.seq_id, v["SeqID"].as_u64().unwrap());
            assert_eq!(frame.log_id, v["LogID"].as_u64().unwrap());
            assert_eq!(frame.service as i64, v["service"].as_i64().unwrap());
            assert_eq!(frame.method as i64, v["method"].as_i64().unwrap());
            let headers: Vec<(String, String)> = frame
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect();
            let want: Vec<(String, String)> = v["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h[0].as_str().unwrap().to_owned(),
                        h[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            assert_eq!(headers, want);
            let payload = v["payload_hex"].as_str().map(unhex);
            assert_eq!(frame.payload, payload);
            assert_eq!(frame.to_bytes(), bytes, "re-encoding {}", v["name"]);
        }
    }

    #[test]
    fn ack_echoes_the_frame_with_biz_rt_and_code() {
        let event = Frame {
            seq_id: 7,
            log_id: 9,
            service: 33554678,
            method: METHOD_DATA,
            headers: vec![
                header("type", "event"),
                header("message_id", "m1"),
                header("trace_id", "t1"),
            ],
            payload: Some(b"{}".to_vec()),
            ..Frame::ping(0)
        };
        let ack = event.ack(200, 12);
        assert_eq!(
            (ack.seq_id, ack.log_id, ack.service, ack.method),
            (7, 9, 33554678, 1)
        );
        assert_eq!(ack.header("trace_id"), Some("t1"));
        assert_eq!(ack.header("biz_rt"), Some("12"));
        assert_eq!(ack.payload.as_deref(), Some(&b"{\"code\":200}"[..]));
        assert_eq!(event.kind(), Kind::Event);
        assert_eq!(Frame::ping(5).kind(), Kind::Ping);
    }

    #[test]
    fn garbage_does_not_decode_into_a_frame_with_a_kind() {
        for bytes in [&b""[..], b"\xff\xff\xff", b"{\"code\":200}"] {
            if let Ok(f) = Frame::decode_bytes(bytes) {
                assert_eq!(f.kind(), Kind::Other);
            }
        }
    }
}
