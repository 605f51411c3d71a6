//! The protobuf messages of circuit relay v2 and of the signed envelope, as prost structs.
//!
//! Written by hand from the specs' `.proto` files (libp2p specs `relay/circuit-v2.md` and
//! RFC 0002 `signed-envelopes`), so no build script or `protoc` is needed. Fields the specs
//! mark `required` are declared `optional` here: prost does not check presence, and a missing
//! `type` must be told apart from `RESERVE` (0). The wire format is the same. Crate-private:
//! the typed messages of [`codec`](super::codec) are the API.

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HopMessage {
    #[prost(int32, optional, tag = "1")]
    pub(crate) r#type: Option<i32>,
    #[prost(message, optional, tag = "2")]
    pub(crate) peer: Option<Peer>,
    #[prost(message, optional, tag = "3")]
    pub(crate) reservation: Option<Reservation>,
    #[prost(message, optional, tag = "4")]
    pub(crate) limit: Option<Limit>,
    #[prost(int32, optional, tag = "5")]
    pub(crate) status: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StopMessage {
    #[prost(int32, optional, tag = "1")]
    pub(crate) r#type: Option<i32>,
    #[prost(message, optional, tag = "2")]
    pub(crate) peer: Option<Peer>,
    #[prost(message, optional, tag = "3")]
    pub(crate) limit: Option<Limit>,
    #[prost(int32, optional, tag = "4")]
    pub(crate) status: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Peer {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub(crate) id: Option<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub(crate) addrs: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Reservation {
    #[prost(uint64, optional, tag = "1")]
    pub(crate) expire: Option<u64>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub(crate) addrs: Vec<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub(crate) voucher: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Limit {
    #[prost(uint32, optional, tag = "1")]
    pub(crate) duration: Option<u32>,
    #[prost(uint64, optional, tag = "2")]
    pub(crate) data: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ReservationVoucher {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub(crate) relay: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub(crate) peer: Option<Vec<u8>>,
    #[prost(uint64, optional, tag = "3")]
    pub(crate) expiration: Option<u64>,
}

/// RFC 0002's envelope. `public_key` is the embedded `PublicKey` message, kept as its bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Envelope {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub(crate) public_key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub(crate) payload_type: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    pub(crate) payload: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub(crate) signature: Option<Vec<u8>>,
}
