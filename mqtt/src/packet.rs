//! The [`Packet`] enum, the fixed header (§2.1), and the [`decode`] / [`frame_len`]
//! entry points. Each packet kind's variable header and payload live in its own
//! module and implement [`Body`].

use crate::error::{EncodeError, Error};
use crate::wire::{MAX_VARINT, Reader, VarInt, Writer, parse_varint, varint_len};
use crate::{
    Auth, ConnAck, Connect, Disconnect, ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish,
    SubAck, Subscribe, UnsubAck, Unsubscribe,
};

/// Largest possible MQTT packet: a 4-byte remaining length of 268 435 455 plus the
/// fixed header.
pub const MAX_PACKET_SIZE: u32 = MAX_VARINT + 5;

/// Control packet type: the high nibble of the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[expect(
    missing_docs,
    reason = "variant names are the packet names of the specification"
)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    /// MQTT 5.0 only.
    Auth = 15,
}

impl PacketType {
    /// The packet type for a fixed-header nibble, `None` for 0 and above 15.
    pub const fn from_u8(v: u8) -> Option<Self> {
        use PacketType::*;
        Some(match v {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }

    /// The fixed-header flags every packet but PUBLISH must carry (§2.1.3).
    pub(crate) const fn required_flags(self) -> u8 {
        match self {
            Self::PubRel | Self::Subscribe | Self::Unsubscribe => 0b0010,
            _ => 0,
        }
    }
}

/// How to decode: the protocol version of the connection and the largest packet
/// accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Version negotiated by CONNECT. A CONNECT packet is decoded with its own
    /// protocol level whatever this says, so a server can decode the first packet
    /// of a connection before it knows the version.
    pub version: ProtocolVersion,
    /// Largest whole packet (fixed header included) accepted; larger ones are
    /// [`Error::PacketTooLarge`] before their body is even received.
    pub max_packet_size: u32,
}

impl DecodeOptions {
    /// Options for `version` accepting any packet size the protocol allows.
    pub const fn new(version: ProtocolVersion) -> Self {
        Self {
            version,
            max_packet_size: MAX_PACKET_SIZE,
        }
    }
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self::new(ProtocolVersion::V5)
    }
}

/// Any MQTT control packet, borrowing from the decoded input or the caller's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(
    missing_docs,
    reason = "variant names are the packet names of the specification"
)]
pub enum Packet<'a> {
    Connect(Connect<'a>),
    ConnAck(ConnAck<'a>),
    Publish(Publish<'a>),
    PubAck(PubAck<'a>),
    PubRec(PubRec<'a>),
    PubRel(PubRel<'a>),
    PubComp(PubComp<'a>),
    Subscribe(Subscribe<'a>),
    SubAck(SubAck<'a>),
    Unsubscribe(Unsubscribe<'a>),
    UnsubAck(UnsubAck<'a>),
    PingReq,
    PingResp,
    Disconnect(Disconnect<'a>),
    Auth(Auth<'a>),
}

/// Variable header and payload of one packet kind.
pub(crate) trait Body<'a>: Sized {
    /// The packet type this body belongs to.
    const TYPE: PacketType;

    /// Decodes the body; `r` holds exactly the remaining-length bytes and `flags`
    /// the low nibble of the first byte. Leftover bytes are reported by the caller.
    fn decode(r: &mut Reader<'a>, flags: u8, version: ProtocolVersion) -> Result<Self, Error>;

    /// Fixed-header flags for this packet.
    fn flags(&self) -> u8 {
        Self::TYPE.required_flags()
    }

    /// Remaining length; validates everything [`Body::write_body`] relies on.
    fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError>;

    /// Writes the body; called only after [`Body::body_len`] succeeded.
    fn write_body(&self, version: ProtocolVersion, w: &mut Writer<'_>) -> Result<(), EncodeError>;
}

/// The fixed header of a packet whose header bytes are all present.
#[derive(Debug, Clone, Copy)]
struct FixedHeader {
    first_byte: u8,
    /// Bytes of the fixed header itself (1 + remaining length field).
    header_len: usize,
    /// The remaining length.
    body_len: usize,
}

impl FixedHeader {
    fn total(self) -> usize {
        self.header_len + self.body_len
    }
}

fn parse_fixed_header(buf: &[u8], max: u32) -> Result<FixedHeader, Error> {
    let Some((&first_byte, rest)) = buf.split_first() else {
        return Err(Error::Incomplete { needed: None });
    };
    let (value, len) = match parse_varint(rest) {
        VarInt::Value { value, len } => (value, len),
        VarInt::Incomplete => return Err(Error::Incomplete { needed: None }),
        VarInt::Malformed => return Err(Error::MalformedRemainingLength),
    };
    let body_len = usize::try_from(value).map_err(|_| Error::MalformedRemainingLength)?;
    let header = FixedHeader {
        first_byte,
        header_len: 1 + len,
        body_len,
    };
    if u32::try_from(header.total()).map_or(true, |total| total > max) {
        return Err(Error::PacketTooLarge {
            size: header.total(),
            max,
        });
    }
    Ok(header)
}

/// Size of the packet at the start of `buf` (fixed header included), once all of
/// it is in `buf`; reads only the fixed header.
///
/// Lets a reader split frames off a stream and reject an oversize packet as soon
/// as its fixed header arrives, before buffering the body:
/// - `Ok(len)`: `buf[..len]` is one whole frame (not yet validated: [`decode`] it);
/// - [`Error::Incomplete`]: read more; `needed` is `Some(n)` once the fixed header
///   is complete and the body is `n` bytes short, `None` while the fixed header
///   itself is incomplete;
/// - [`Error::MalformedRemainingLength`] or [`Error::PacketTooLarge`]: the peer
///   violated the protocol.
pub fn frame_len(buf: &[u8], max: u32) -> Result<usize, Error> {
    let total = parse_fixed_header(buf, max)?.total();
    if total > buf.len() {
        return Err(Error::Incomplete {
            needed: Some(total - buf.len()),
        });
    }
    Ok(total)
}

/// Decodes the packet at the start of `buf`, returning it and the number of bytes
/// it took.
///
/// [`Error::Incomplete`] means `buf` holds only the start of a packet: read more
/// and call again with the longer buffer. Any other error means the peer violated
/// the protocol; [`Error::reason_code`] says how to answer it.
pub fn decode<'a>(buf: &'a [u8], opts: &DecodeOptions) -> Result<(Packet<'a>, usize), Error> {
    let (first_byte, body, total) = split_frame(buf, opts.max_packet_size)?;
    let packet = decode_body(first_byte, body, opts.version)?;
    Ok((packet, total))
}

/// The first byte and the body of the whole packet at the start of `buf`, and the
/// packet's length.
pub(crate) fn split_frame(buf: &[u8], max: u32) -> Result<(u8, &[u8], usize), Error> {
    let header = parse_fixed_header(buf, max)?;
    let total = header.total();
    let Some(body) = buf.get(header.header_len..total) else {
        return Err(Error::Incomplete {
            needed: Some(total - buf.len()),
        });
    };
    Ok((header.first_byte, body, total))
}

/// The packet type and flags of a first byte. AUTH exists only in 5.0.
pub(crate) fn packet_type_of(
    first_byte: u8,
    version: ProtocolVersion,
) -> Result<(PacketType, u8), Error> {
    let type_nibble = first_byte >> 4;
    let packet_type = PacketType::from_u8(type_nibble)
        .filter(|t| *t != PacketType::Auth || version == ProtocolVersion::V5)
        .ok_or(Error::InvalidPacketType(type_nibble))?;
    Ok((packet_type, first_byte & 0x0F))
}

pub(crate) fn body<'a, B: Body<'a>>(
    r: &mut Reader<'a>,
    flags: u8,
    version: ProtocolVersion,
) -> Result<B, Error> {
    if B::TYPE != PacketType::Publish && flags != B::TYPE.required_flags() {
        return Err(Error::InvalidHeaderFlags {
            packet: B::TYPE,
            flags,
        });
    }
    B::decode(r, flags, version)
}

fn decode_body(
    first_byte: u8,
    bytes: &[u8],
    version: ProtocolVersion,
) -> Result<Packet<'_>, Error> {
    let (packet_type, flags) = packet_type_of(first_byte, version)?;
    let r = &mut Reader::new(bytes);
    let packet = match packet_type {
        // CONNECT carries its own protocol level; its decoder ignores `version`.
        PacketType::Connect => Packet::Connect(body(r, flags, version)?),
        PacketType::ConnAck => Packet::ConnAck(body(r, flags, version)?),
        PacketType::Publish => Packet::Publish(body(r, flags, version)?),
        PacketType::PubAck => Packet::PubAck(body(r, flags, version)?),
        PacketType::PubRec => Packet::PubRec(body(r, flags, version)?),
        PacketType::PubRel => Packet::PubRel(body(r, flags, version)?),
        PacketType::PubComp => Packet::PubComp(body(r, flags, version)?),
        PacketType::Subscribe => Packet::Subscribe(body(r, flags, version)?),
        PacketType::SubAck => Packet::SubAck(body(r, flags, version)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(body(r, flags, version)?),
        PacketType::UnsubAck => Packet::UnsubAck(body(r, flags, version)?),
        PacketType::PingReq | PacketType::PingResp => {
            if flags != 0 {
                return Err(Error::InvalidHeaderFlags {
                    packet: packet_type,
                    flags,
                });
            }
            if packet_type == PacketType::PingReq {
                Packet::PingReq
            } else {
                Packet::PingResp
            }
        }
        PacketType::Disconnect => Packet::Disconnect(body(r, flags, version)?),
        PacketType::Auth => Packet::Auth(body(r, flags, version)?),
    };
    if !r.is_empty() {
        return Err(Error::TrailingBytes);
    }
    Ok(packet)
}

/// The encoding half of [`Body`], object safe: [`encode_body`] and
/// [`remaining_len`] exist once for all packet kinds instead of once per kind.
trait EncodeBody {
    /// First byte of the fixed header: packet type and flags.
    fn first_byte(&self) -> u8;
    /// See [`Body::body_len`].
    fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError>;
    /// See [`Body::write_body`].
    fn write_body(&self, version: ProtocolVersion, w: &mut Writer<'_>) -> Result<(), EncodeError>;
}

impl<'a, B: Body<'a>> EncodeBody for B {
    fn first_byte(&self) -> u8 {
        ((B::TYPE as u8) << 4) | self.flags()
    }

    fn body_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        Body::body_len(self, version)
    }

    fn write_body(&self, version: ProtocolVersion, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        Body::write_body(self, version, w)
    }
}

/// Remaining length of `b` as the `u32` the fixed header carries.
fn remaining_len(b: &dyn EncodeBody, version: ProtocolVersion) -> Result<u32, EncodeError> {
    u32::try_from(b.body_len(version)?)
        .ok()
        .filter(|&n| n <= MAX_VARINT)
        .ok_or(EncodeError::PacketTooLarge)
}

fn total_len(remaining: u32) -> usize {
    // `remaining` is at most MAX_VARINT, which fits any usize of 32 bits or more.
    1 + varint_len(remaining) + usize::try_from(remaining).unwrap_or(usize::MAX)
}

fn encode_body(
    b: &dyn EncodeBody,
    version: ProtocolVersion,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let remaining = remaining_len(b, version)?;
    let total = total_len(remaining);
    if out.len() < total {
        return Err(EncodeError::BufferTooSmall {
            needed: total,
            available: out.len(),
        });
    }
    let mut w = Writer::new(out);
    w.u8(b.first_byte())?;
    w.varint(remaining)?;
    b.write_body(version, &mut w)?;
    Ok(w.position())
}

/// Encodes a packet with no variable header or payload.
pub(crate) fn encode_empty(packet: PacketType, out: &mut [u8]) -> Result<usize, EncodeError> {
    let mut w = Writer::new(out);
    w.bytes(&[(packet as u8) << 4, 0])?;
    Ok(2)
}

impl Packet<'_> {
    /// The packet type.
    pub const fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::PubRec(_) => PacketType::PubRec,
            Self::PubRel(_) => PacketType::PubRel,
            Self::PubComp(_) => PacketType::PubComp,
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::SubAck(_) => PacketType::SubAck,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingReq => PacketType::PingReq,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }

    /// Size of the encoded packet in `version`, fixed header included. Fails for
    /// the same reasons as [`Packet::encode`] except a short buffer.
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let remaining = match self {
            Self::Connect(p) => remaining_len(p, version)?,
            Self::ConnAck(p) => remaining_len(p, version)?,
            Self::Publish(p) => remaining_len(p, version)?,
            Self::PubAck(p) => remaining_len(p, version)?,
            Self::PubRec(p) => remaining_len(p, version)?,
            Self::PubRel(p) => remaining_len(p, version)?,
            Self::PubComp(p) => remaining_len(p, version)?,
            Self::Subscribe(p) => remaining_len(p, version)?,
            Self::SubAck(p) => remaining_len(p, version)?,
            Self::Unsubscribe(p) => remaining_len(p, version)?,
            Self::UnsubAck(p) => remaining_len(p, version)?,
            Self::PingReq | Self::PingResp => 0,
            Self::Disconnect(p) => remaining_len(p, version)?,
            Self::Auth(p) => remaining_len(p, version)?,
        };
        Ok(total_len(remaining))
    }

    /// Encodes the packet for a `version` connection into the start of `out`,
    /// returning the number of bytes written.
    ///
    /// MQTT 3.1.1 cannot carry properties, v5 subscription options or most reason
    /// codes: encoding for 3.1.1 leaves properties out, maps CONNACK and SUBACK
    /// reason codes onto the 3.1.1 return codes, and fails with
    /// [`EncodeError::NotInVersion`] for AUTH.
    pub fn encode(&self, version: ProtocolVersion, out: &mut [u8]) -> Result<usize, EncodeError> {
        match self {
            Self::Connect(p) => encode_body(p, version, out),
            Self::ConnAck(p) => encode_body(p, version, out),
            Self::Publish(p) => encode_body(p, version, out),
            Self::PubAck(p) => encode_body(p, version, out),
            Self::PubRec(p) => encode_body(p, version, out),
            Self::PubRel(p) => encode_body(p, version, out),
            Self::PubComp(p) => encode_body(p, version, out),
            Self::Subscribe(p) => encode_body(p, version, out),
            Self::SubAck(p) => encode_body(p, version, out),
            Self::Unsubscribe(p) => encode_body(p, version, out),
            Self::UnsubAck(p) => encode_body(p, version, out),
            Self::PingReq => encode_empty(PacketType::PingReq, out),
            Self::PingResp => encode_empty(PacketType::PingResp, out),
            Self::Disconnect(p) => encode_body(p, version, out),
            Self::Auth(p) => encode_body(p, version, out),
        }
    }

    /// Encodes into a new vector sized by [`Packet::encoded_len`].
    #[cfg(feature = "alloc")]
    pub fn to_vec(&self, version: ProtocolVersion) -> Result<alloc::vec::Vec<u8>, EncodeError> {
        let mut out = alloc::vec![0; self.encoded_len(version)?];
        let n = self.encode(version, &mut out)?;
        out.truncate(n);
        Ok(out)
    }
}

macro_rules! packet_from {
    ($($variant:ident),*) => {
        $(
            impl<'a> From<$variant<'a>> for Packet<'a> {
                fn from(p: $variant<'a>) -> Self {
                    Self::$variant(p)
                }
            }

            impl $variant<'_> {
                #[doc = concat!(
                    "Encodes this ", stringify!($variant), " for a `version` connection into ",
                    "the start of `out`; the same bytes and errors as [`Packet::encode`] on ",
                    "`Packet::", stringify!($variant), "`, but an image that calls only this ",
                    "links no other packet type's encoder."
                )]
                pub fn encode(
                    &self,
                    version: ProtocolVersion,
                    out: &mut [u8],
                ) -> Result<usize, EncodeError> {
                    encode_body(self, version, out)
                }
            }
        )*
    };
}

packet_from!(
    Connect,
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth
);

#[cfg(test)]
mod tests {
    use super::*;

    const V5: DecodeOptions = DecodeOptions::new(ProtocolVersion::V5);
    const V311: DecodeOptions = DecodeOptions::new(ProtocolVersion::V311);

    #[test]
    fn per_kind_encode_is_packet_encode() {
        let publish = crate::Publish {
            qos: crate::QoS::AtLeastOnce,
            packet_id: 3,
            topic: "a/b",
            payload: b"x",
            ..Default::default()
        };
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let n = publish.encode(version, &mut a).unwrap();
            assert_eq!(Packet::Publish(publish).encode(version, &mut b), Ok(n));
            assert_eq!(a[..n], b[..n]);
        }
        assert_eq!(
            crate::PubAck::default().encode(ProtocolVersion::V5, &mut a),
            Err(EncodeError::ZeroPacketId)
        );
    }

    #[test]
    fn ping_packets_have_known_encodings() {
        let mut buf = [0u8; 2];
        assert_eq!(
            Packet::PingReq.encode(ProtocolVersion::V311, &mut buf),
            Ok(2)
        );
        assert_eq!(buf, [0xC0, 0]);
        assert_eq!(decode(&[0xD0, 0], &V5), Ok((Packet::PingResp, 2)));
        assert_eq!(Packet::PingResp.encoded_len(ProtocolVersion::V5), Ok(2));
    }

    #[test]
    fn truncated_input_is_incomplete_not_malformed() {
        assert_eq!(decode(&[], &V5), Err(Error::Incomplete { needed: None }));
        assert_eq!(
            decode(&[0x30], &V5),
            Err(Error::Incomplete { needed: None })
        );
        assert_eq!(
            decode(&[0x30, 0x80], &V5),
            Err(Error::Incomplete { needed: None })
        );
        assert_eq!(
            decode(&[0x30, 10, 0, 3], &V5),
            Err(Error::Incomplete { needed: Some(8) })
        );
        assert_eq!(
            frame_len(&[0x30, 0x80, 0x01], MAX_PACKET_SIZE),
            Err(Error::Incomplete { needed: Some(128) })
        );
        assert_eq!(
            frame_len(&[0x30, 0x80], MAX_PACKET_SIZE),
            Err(Error::Incomplete { needed: None })
        );
        assert_eq!(frame_len(&[0xC0, 0, 0xD0], MAX_PACKET_SIZE), Ok(2));
    }

    #[test]
    fn remaining_length_of_five_bytes_is_malformed() {
        let buf = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
        assert_eq!(decode(&buf, &V5), Err(Error::MalformedRemainingLength));
        assert_eq!(
            frame_len(&buf, MAX_PACKET_SIZE),
            Err(Error::MalformedRemainingLength)
        );
    }

    #[test]
    fn oversize_packets_are_rejected_from_the_header() {
        let opts = DecodeOptions {
            max_packet_size: 100,
            ..V5
        };
        // Remaining length 200: the body has not arrived, the size is already known.
        assert_eq!(
            decode(&[0x30, 0xC8, 0x01], &opts),
            Err(Error::PacketTooLarge {
                size: 203,
                max: 100
            })
        );
        assert_eq!(
            frame_len(&[0x30, 0xC8, 0x01], 100)
                .unwrap_err()
                .reason_code()
                .to_u8(),
            0x95
        );
        let mut exactly_max = [0u8; 100];
        exactly_max[..2].copy_from_slice(&[0x30, 98]);
        assert_eq!(frame_len(&exactly_max, 100), Ok(100));
        assert_eq!(
            frame_len(&[0x30, 99], 100),
            Err(Error::PacketTooLarge {
                size: 101,
                max: 100
            })
        );
    }

    #[test]
    fn reserved_packet_types_and_flags_are_malformed() {
        assert_eq!(decode(&[0x00, 0], &V5), Err(Error::InvalidPacketType(0)));
        assert_eq!(decode(&[0xF0, 0], &V311), Err(Error::InvalidPacketType(15)));
        assert_eq!(
            decode(&[0xC1, 0], &V5),
            Err(Error::InvalidHeaderFlags {
                packet: PacketType::PingReq,
                flags: 1
            })
        );
        // PUBREL must carry 0b0010.
        assert_eq!(
            decode(&[0x60, 2, 0, 1], &V311),
            Err(Error::InvalidHeaderFlags {
                packet: PacketType::PubRel,
                flags: 0
            })
        );
        assert_eq!(decode(&[0xC0, 1, 0], &V5), Err(Error::TrailingBytes));
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn to_vec_holds_exactly_the_encoding() {
        let bytes = Packet::PingReq.to_vec(ProtocolVersion::V5).unwrap();
        assert_eq!(bytes, [0xC0, 0]);
    }

    #[test]
    fn decode_reports_consumed_bytes_and_leaves_the_rest() {
        let buf = [0xC0, 0, 0xD0, 0];
        assert_eq!(decode(&buf, &V5), Ok((Packet::PingReq, 2)));
        assert_eq!(decode(&buf[2..], &V5), Ok((Packet::PingResp, 2)));
    }
}
