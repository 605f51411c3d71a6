//! The libp2p TLS spec's certificate vectors (`tests/data/libp2p-tls-vectors.txt`).
//!
//! Format: `#` comments, blank lines, and one block per vector of `name:`, `expect:` (a PeerId or
//! `reject`) and `der:` (hex of the certificate).

/// One certificate vector.
#[derive(Debug, Clone)]
pub struct Vector {
    pub name: String,
    /// The PeerId the certificate must verify as, or `None` if it must be rejected.
    pub expect: Option<String>,
    pub der: Vec<u8>,
}

pub const VECTORS_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../quicpeer/tests/data/libp2p-tls-vectors.txt"
);

/// All vectors of the file, in order.
pub fn load() -> Vec<Vector> {
    let text = std::fs::read_to_string(VECTORS_FILE).expect("read the vectors file");
    let mut vectors = Vec::new();
    let (mut name, mut expect) = (None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(':').expect("`key: value` line");
        let value = value.trim().to_owned();
        match key {
            "name" => name = Some(value),
            "expect" => expect = Some(value),
            "der" => {
                let expect: String = expect.take().expect("expect before der");
                vectors.push(Vector {
                    name: name.take().expect("name before der"),
                    expect: (expect != "reject").then_some(expect),
                    der: hex::decode(value).expect("hex der"),
                });
            }
            other => panic!("unknown key {other:?} in the vectors file"),
        }
    }
    vectors
}
