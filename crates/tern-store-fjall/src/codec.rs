//! Value encodings: one version byte, then the fields in a fixed order.
//! Decoding checks every length and fails with a `Corrupt` [`BackendError`].

use bytes::Bytes;
use tern_store::{
    BackendError, ConversationId, ConversationKind, ConversationRecord, DeviceKeys, DeviceRecord,
    PoolKey, Seq, SignedPrekey, StoredMessage,
};

/// First byte of every record, bumped when a layout changes.
const VERSION: u8 = 1;

struct Enc(Vec<u8>);

impl Enc {
    fn new(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity + 1);
        buf.push(VERSION);
        Enc(buf)
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// u32 length, then the bytes (values are far below 4 GiB).
    fn bytes(self, v: &[u8]) -> Self {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        let mut this = self.u32(len);
        this.0.extend_from_slice(v);
        this
    }
}

struct Dec<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Dec<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Result<Self, BackendError> {
        let mut dec = Dec { buf, what };
        match dec.u8()? {
            VERSION => Ok(dec),
            v => Err(dec.corrupt(&format!("unknown record version {v}"))),
        }
    }
    fn corrupt(&self, why: &str) -> BackendError {
        BackendError::corrupt(format!("corrupt {} record: {why}", self.what))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], BackendError> {
        let (head, rest) = self
            .buf
            .split_at_checked(n)
            .ok_or_else(|| self.corrupt("truncated"))?;
        self.buf = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], BackendError> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| self.corrupt("truncated"))
    }
    fn u8(&mut self) -> Result<u8, BackendError> {
        Ok(u8::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, BackendError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, BackendError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], BackendError> {
        let len = usize::try_from(self.u32()?).map_err(|_| self.corrupt("length overflow"))?;
        self.take(len)
    }
    fn string(&mut self) -> Result<String, BackendError> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt("string is not UTF-8"))
    }
    fn finish(&self) -> Result<(), BackendError> {
        match self.buf.is_empty() {
            true => Ok(()),
            false => Err(self.corrupt("trailing bytes")),
        }
    }
}

pub fn device(d: &DeviceRecord) -> Vec<u8> {
    Enc::new(d.name.len() + 52)
        .u32(d.device)
        .bytes(d.name.as_bytes())
        .bytes(&d.public_key)
        .u64(d.created_ms)
        .0
}

pub fn decode_device(buf: &[u8]) -> Result<DeviceRecord, BackendError> {
    let mut dec = Dec::new(buf, "device")?;
    let device = dec.u32()?;
    let name = dec.string()?;
    let public_key = <[u8; 32]>::try_from(dec.bytes()?)
        .map_err(|_| dec.corrupt("public key is not 32 bytes"))?;
    let created_ms = dec.u64()?;
    dec.finish()?;
    Ok(DeviceRecord {
        device,
        name,
        public_key,
        created_ms,
    })
}

fn kind_tag(kind: ConversationKind) -> u8 {
    match kind {
        ConversationKind::Direct => 1,
        ConversationKind::Group => 2,
        ConversationKind::NoteToSelf => 3,
    }
}

fn tag_kind(tag: u8) -> Option<ConversationKind> {
    match tag {
        1 => Some(ConversationKind::Direct),
        2 => Some(ConversationKind::Group),
        3 => Some(ConversationKind::NoteToSelf),
        _ => None,
    }
}

/// Everything but the id (the key) and the head (its own table).
pub fn conversation(c: &ConversationRecord) -> Vec<u8> {
    let count = u32::try_from(c.members.len()).unwrap_or(u32::MAX);
    let mut enc = Enc::new(64 + c.members.len() * 16)
        .u8(kind_tag(c.kind))
        .bytes(c.creator.as_bytes())
        .u64(c.created_ms)
        .u32(count);
    for member in &c.members {
        enc = enc.bytes(member.as_bytes());
    }
    enc.0
}

pub fn decode_conversation(
    id: ConversationId,
    head_seq: Seq,
    buf: &[u8],
) -> Result<ConversationRecord, BackendError> {
    let mut dec = Dec::new(buf, "conversation")?;
    let kind = tag_kind(dec.u8()?).ok_or_else(|| dec.corrupt("unknown conversation kind"))?;
    let creator = dec.string()?;
    let created_ms = dec.u64()?;
    let count = dec.u32()?;
    let mut members = std::collections::BTreeSet::new();
    for _ in 0..count {
        members.insert(dec.string()?);
    }
    dec.finish()?;
    Ok(ConversationRecord {
        id,
        kind,
        creator,
        members,
        created_ms,
        head_seq,
    })
}

/// Everything but the conversation id and seq (the key).
pub fn message(m: &StoredMessage) -> Vec<u8> {
    let mut enc = Enc::new(64 + m.sender_user.len() + m.payload.len())
        .bytes(m.sender_user.as_bytes())
        .u32(m.sender_device)
        .u64(m.client_message_id)
        .u64(m.server_time_ms)
        .u64(m.expires_at_ms)
        .u32(m.flags);
    enc.0.extend_from_slice(&m.payload);
    enc.0
}

impl Enc {
    fn raw(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    fn flag(self, present: bool) -> Self {
        self.u8(u8::from(present))
    }
    fn signed(self, key: Option<&SignedPrekey>) -> Self {
        match key {
            None => self.flag(false),
            Some(k) => self.flag(true).u32(k.id).raw(&k.public).raw(&k.signature),
        }
    }
    fn opt_bytes(self, v: Option<&Bytes>) -> Self {
        match v {
            None => self.flag(false),
            Some(v) => self.flag(true).bytes(v),
        }
    }
}

impl Dec<'_> {
    fn flag(&mut self) -> Result<bool, BackendError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.corrupt(&format!("presence flag is {v}, not 0 or 1"))),
        }
    }
    fn signed(&mut self) -> Result<Option<SignedPrekey>, BackendError> {
        if !self.flag()? {
            return Ok(None);
        }
        Ok(Some(SignedPrekey {
            id: self.u32()?,
            public: self.array()?,
            signature: self.array()?,
        }))
    }
    fn opt_bytes(&mut self) -> Result<Option<Bytes>, BackendError> {
        if !self.flag()? {
            return Ok(None);
        }
        Ok(Some(Bytes::copy_from_slice(self.bytes()?)))
    }
}

pub fn decode_message(
    conversation_id: ConversationId,
    seq: Seq,
    buf: &[u8],
) -> Result<StoredMessage, BackendError> {
    let mut dec = Dec::new(buf, "message")?;
    Ok(StoredMessage {
        conversation_id,
        seq,
        sender_user: dec.string()?,
        sender_device: dec.u32()?,
        client_message_id: dec.u64()?,
        server_time_ms: dec.u64()?,
        expires_at_ms: dec.u64()?,
        flags: dec.u32()?,
        payload: Bytes::copy_from_slice(dec.buf),
    })
}

/// A device's long-term keys as stored: each part is optional, since a
/// signed prekey may arrive before the identity key.
#[derive(Default)]
pub struct StoredDeviceKeys {
    pub identity: Option<([u8; 32], [u8; 64])>,
    pub signed: Option<SignedPrekey>,
    pub kem: Option<Bytes>,
}

impl StoredDeviceKeys {
    /// The directory entry, once the identity key is known.
    pub fn complete(self) -> Option<DeviceKeys> {
        let (identity_key, identity_signature) = self.identity?;
        Some(DeviceKeys {
            identity_key,
            identity_signature,
            signed_prekey: self.signed,
            kem_prekey: self.kem,
        })
    }
}

pub fn device_keys(k: &StoredDeviceKeys) -> Vec<u8> {
    let kem_len = k.kem.as_ref().map_or(0, Bytes::len);
    let mut enc = Enc::new(224 + kem_len);
    enc = match &k.identity {
        None => enc.flag(false),
        Some((key, signature)) => enc.flag(true).raw(key).raw(signature),
    };
    enc.signed(k.signed.as_ref()).opt_bytes(k.kem.as_ref()).0
}

pub fn decode_device_keys(buf: &[u8]) -> Result<StoredDeviceKeys, BackendError> {
    let mut dec = Dec::new(buf, "device keys")?;
    let identity = match dec.flag()? {
        false => None,
        true => Some((dec.array()?, dec.array()?)),
    };
    let keys = StoredDeviceKeys {
        identity,
        signed: dec.signed()?,
        kem: dec.opt_bytes()?,
    };
    dec.finish()?;
    Ok(keys)
}

/// A key pool's metadata (`key_pool_meta`): how many keys it holds and its
/// last-resort key.
#[derive(Default)]
pub struct PoolMeta {
    pub count: u32,
    pub last_resort: Option<PoolKey>,
}

pub fn pool_meta(p: &PoolMeta) -> Vec<u8> {
    let len = p.last_resort.as_ref().map_or(0, |k| k.key.len());
    let enc = Enc::new(24 + len).u32(p.count);
    match &p.last_resort {
        None => enc.flag(false).0,
        Some(k) => enc.flag(true).u64(k.id).bytes(&k.key).0,
    }
}

pub fn decode_pool_meta(buf: &[u8]) -> Result<PoolMeta, BackendError> {
    let mut dec = Dec::new(buf, "key pool")?;
    let count = dec.u32()?;
    let last_resort = match dec.flag()? {
        false => None,
        true => Some(PoolKey {
            id: dec.u64()?,
            key: Bytes::copy_from_slice(dec.bytes()?),
        }),
    };
    dec.finish()?;
    Ok(PoolMeta { count, last_resort })
}
