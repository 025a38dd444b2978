//! Kubernetes' protobuf encoding, decoded into the JSON the store keeps, for the kinds that
//! `kubectl create` sends as protobuf (`namespace`, `secret`, `configmap`, `serviceaccount`):
//! client-go sends built-in types as `application/vnd.kubernetes.protobuf` and, unlike for
//! CBOR, does not fall back to JSON on a 415. Field numbers are those of
//! `k8s.io/api/core/v1/generated.proto` and `k8s.io/apimachinery/.../meta/v1/generated.proto`.

use base64::Engine;
use serde_json::{Map, Value, json};

/// The envelope's magic prefix.
const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long".into())
}

/// Every (field number, value) of one message, in order.
fn fields(buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let wire = match key & 7 {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            1 | 5 => {
                pos += if key & 7 == 1 { 8 } else { 4 };
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| "length")?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len());
                let end = end.ok_or("truncated field")?;
                let bytes = &buf[pos..end];
                pos = end;
                Wire::Bytes(bytes)
            }
            other => return Err(format!("wire type {other} is not supported")),
        };
        out.push((key >> 3, wire));
    }
    if pos > buf.len() {
        return Err("truncated fixed field".into());
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "a string field is not UTF-8".to_owned())
}

/// A `map<string, V>` entry: key 1, value 2.
fn map_entry(bytes: &[u8], binary: bool) -> Result<(String, Value), String> {
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for (field, wire) in fields(bytes)? {
        match (field, wire) {
            (1, Wire::Bytes(b)) => key = text(b)?,
            (2, Wire::Bytes(b)) if binary => {
                value = json!(base64::engine::general_purpose::STANDARD.encode(b))
            }
            (2, Wire::Bytes(b)) => value = json!(text(b)?),
            _ => {}
        }
    }
    Ok((key, value))
}

fn insert_entry(
    object: &mut Map<String, Value>,
    name: &str,
    bytes: &[u8],
    binary: bool,
) -> Result<(), String> {
    let (key, value) = map_entry(bytes, binary)?;
    object
        .entry(name)
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("a map field")
        .insert(key, value);
    Ok(())
}

fn owner_reference(bytes: &[u8]) -> Result<Value, String> {
    let mut owner = Map::new();
    for (field, wire) in fields(bytes)? {
        match (field, wire) {
            (1, Wire::Bytes(b)) => drop(owner.insert("kind".into(), json!(text(b)?))),
            (3, Wire::Bytes(b)) => drop(owner.insert("name".into(), json!(text(b)?))),
            (4, Wire::Bytes(b)) => drop(owner.insert("uid".into(), json!(text(b)?))),
            (5, Wire::Bytes(b)) => drop(owner.insert("apiVersion".into(), json!(text(b)?))),
            (6, Wire::Varint(v)) => drop(owner.insert("controller".into(), json!(v != 0))),
            (7, Wire::Varint(v)) => drop(owner.insert("blockOwnerDeletion".into(), json!(v != 0))),
            _ => {}
        }
    }
    Ok(Value::Object(owner))
}

/// ObjectMeta: what a client may set on create (server-set fields are the server's).
fn object_meta(bytes: &[u8]) -> Result<Value, String> {
    let mut meta = Map::new();
    for (field, wire) in fields(bytes)? {
        match (field, wire) {
            (1, Wire::Bytes(b)) => drop(meta.insert("name".into(), json!(text(b)?))),
            (2, Wire::Bytes(b)) => drop(meta.insert("generateName".into(), json!(text(b)?))),
            (3, Wire::Bytes(b)) => drop(meta.insert("namespace".into(), json!(text(b)?))),
            (6, Wire::Bytes(b)) => drop(meta.insert("resourceVersion".into(), json!(text(b)?))),
            (11, Wire::Bytes(b)) => insert_entry(&mut meta, "labels", b, false)?,
            (12, Wire::Bytes(b)) => insert_entry(&mut meta, "annotations", b, false)?,
            (13, Wire::Bytes(b)) => meta
                .entry("ownerReferences")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .expect("a list")
                .push(owner_reference(b)?),
            (14, Wire::Bytes(b)) => meta
                .entry("finalizers")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .expect("a list")
                .push(json!(text(b)?)),
            _ => {}
        }
    }
    Ok(Value::Object(meta))
}

fn strings(list: &mut Map<String, Value>, name: &str, bytes: &[u8]) -> Result<(), String> {
    list.entry(name)
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .expect("a list")
        .push(json!(text(bytes)?));
    Ok(())
}

/// The object in a protobuf body, as JSON; an error names what could not be read.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("not a Kubernetes protobuf envelope")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    for (field, wire) in fields(envelope)? {
        match (field, wire) {
            (1, Wire::Bytes(type_meta)) => {
                for (f, w) in fields(type_meta)? {
                    match (f, w) {
                        (1, Wire::Bytes(b)) => api_version = text(b)?,
                        (2, Wire::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = Some(b),
            _ => {}
        }
    }
    let raw = raw.ok_or("the envelope holds no object")?;
    let mut object = Map::new();
    object.insert("apiVersion".into(), json!(api_version));
    object.insert("kind".into(), json!(kind));
    for (field, wire) in fields(raw)? {
        let Wire::Bytes(b) = wire else {
            match (api_version.as_str(), kind.as_str(), field, wire) {
                ("v1", "Secret", 5, Wire::Varint(v)) | ("v1", "ConfigMap", 4, Wire::Varint(v)) => {
                    object.insert("immutable".into(), json!(v != 0));
                }
                ("v1", "ServiceAccount", 4, Wire::Varint(v)) => {
                    object.insert("automountServiceAccountToken".into(), json!(v != 0));
                }
                _ => {}
            }
            continue;
        };
        match (api_version.as_str(), kind.as_str(), field) {
            ("v1", _, 1) => drop(object.insert("metadata".into(), object_meta(b)?)),
            ("v1", "Namespace", 2) => {
                let mut spec = Map::new();
                for (f, w) in fields(b)? {
                    if let (1, Wire::Bytes(s)) = (f, w) {
                        strings(&mut spec, "finalizers", s)?;
                    }
                }
                object.insert("spec".into(), Value::Object(spec));
            }
            ("v1", "Namespace", 3) => {}
            ("v1", "Secret", 2) => insert_entry(&mut object, "data", b, true)?,
            ("v1", "Secret", 3) => drop(object.insert("type".into(), json!(text(b)?))),
            ("v1", "Secret", 4) => insert_entry(&mut object, "stringData", b, false)?,
            ("v1", "ConfigMap", 2) => insert_entry(&mut object, "data", b, false)?,
            ("v1", "ConfigMap", 3) => insert_entry(&mut object, "binaryData", b, true)?,
            ("v1", "ServiceAccount", 2 | 3) => {}
            _ => {
                return Err(format!(
                    "{api_version} {kind} is not decoded from protobuf here; send JSON"
                ));
            }
        }
    }
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(field: u64, wire: u64) -> u8 {
        u8::try_from(field << 3 | wire).unwrap()
    }

    fn bytes_field(field: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![key(field, 2), u8::try_from(payload.len()).unwrap()];
        out.extend_from_slice(payload);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [
            bytes_field(1, api_version.as_bytes()),
            bytes_field(2, kind.as_bytes()),
        ]
        .concat();
        let mut out = MAGIC.to_vec();
        out.extend(bytes_field(1, &type_meta));
        out.extend(bytes_field(2, raw));
        out
    }

    #[test]
    fn a_secret_with_binary_data_labels_and_type_decodes() {
        let meta = [
            bytes_field(1, b"creds"),
            bytes_field(3, b"ci"),
            bytes_field(11, &[bytes_field(1, b"app"), bytes_field(2, b"x")].concat()),
        ]
        .concat();
        let raw = [
            bytes_field(1, &meta),
            bytes_field(
                2,
                &[bytes_field(1, b"token"), bytes_field(2, &[0, 255])].concat(),
            ),
            bytes_field(3, b"Opaque"),
            vec![key(5, 0), 1],
        ]
        .concat();
        let secret = decode(&envelope("v1", "Secret", &raw)).unwrap();
        assert_eq!(
            secret,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": true,
                   "metadata": {"name": "creds", "namespace": "ci", "labels": {"app": "x"}},
                   "data": {"token": "AP8="}})
        );
    }

    #[test]
    fn kinds_it_cannot_read_and_broken_bodies_are_named() {
        let raw = bytes_field(1, &bytes_field(1, b"d"));
        assert!(
            decode(&envelope("apps/v1", "Deployment", &raw))
                .unwrap_err()
                .contains("apps/v1 Deployment")
        );
        assert!(decode(b"{\"json\": true}").is_err());
        let mut truncated = envelope("v1", "Namespace", &raw);
        truncated.truncate(truncated.len() - 2);
        assert!(decode(&truncated).is_err());
    }
}
