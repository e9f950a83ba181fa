//! Reading a reference sample: numpy's `.npz` (what data scientists write
//! with `np.savez`, compressed or not) or the V2 JSON tensor format, one
//! array per tensor name, rows on the first dimension.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// The reference files quiver looks for, in order, in a version folder and
/// then in the model folder.
pub const FILES: [&str; 2] = ["reference.npz", "reference.json"];

/// The largest array data quiver reads from a reference (a sample, not a
/// training set).
const MAX_BYTES: u64 = 512 << 20;

/// One array of a reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub values: Values,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// Floats, integers and booleans; `integral` when the array's type was
    /// an integer or boolean type (a hint that it may hold category codes).
    Numbers { values: Vec<f64>, integral: bool },
    /// Strings (numpy `U` and `S` arrays, V2 `BYTES`).
    Strings(Vec<Vec<u8>>),
}

impl Array {
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// The shape of one row: the array's shape without its first dimension.
    pub fn row_shape(&self) -> &[usize] {
        self.shape.get(1..).unwrap_or(&[])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        match &self.values {
            Values::Numbers { values, .. } => values.len(),
            Values::Strings(s) => s.len(),
        }
    }
}

/// A reference found: the file it came from and its arrays by name.
pub type Found = (String, BTreeMap<String, Array>);

/// The reference of a version, if its folder or its model's folder has one:
/// (the file it came from, its arrays by name).
pub fn find(model_dir: &Path, version: u64) -> Result<Option<Found>, String> {
    let version_dir = model_dir.join(version.to_string());
    for dir in [&version_dir, model_dir] {
        for file in FILES {
            let path = dir.join(file);
            if !path.is_file() {
                continue;
            }
            let shown = path.strip_prefix(model_dir).unwrap_or(&path).display().to_string();
            let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {shown}: {e}"))?;
            let arrays = if file.ends_with(".npz") {
                read_npz(&bytes)
            } else {
                read_v2_json(&bytes)
            }
            .map_err(|e| format!("{shown}: {e}"))?;
            return Ok(Some((shown, arrays)));
        }
    }
    Ok(None)
}

/// The arrays of an `.npz` file (a zip archive of `.npy` files).
pub fn read_npz(zip: &[u8]) -> Result<BTreeMap<String, Array>, String> {
    let mut out = BTreeMap::new();
    for entry in zip_entries(zip)? {
        let name = entry.name.strip_suffix(".npy").unwrap_or(&entry.name).to_owned();
        let npy = entry.read(zip).map_err(|e| format!("array '{name}': {e}"))?;
        let array = read_npy(&npy).map_err(|e| format!("array '{name}': {e}"))?;
        out.insert(name, array);
    }
    if out.is_empty() {
        return Err("the archive holds no array".into());
    }
    Ok(out)
}

struct ZipEntry {
    name: String,
    method: u16,
    compressed: u64,
    size: u64,
    local_header: u64,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| "not a zip archive (truncated)".to_owned())
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| "not a zip archive (truncated)".to_owned())
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, String> {
    Ok(u32_at(b, at)? as u64 | (u32_at(b, at + 4)? as u64) << 32)
}

/// The central directory of a zip archive (zip64 sizes included, as numpy
/// writes them).
fn zip_entries(zip: &[u8]) -> Result<Vec<ZipEntry>, String> {
    const END: u32 = 0x0605_4b50;
    const ENTRY: u32 = 0x0201_4b50;
    let search_from = zip.len().saturating_sub(22 + 65_535);
    let end = (search_from..zip.len().saturating_sub(21))
        .rev()
        .find(|&i| u32_at(zip, i) == Ok(END))
        .ok_or("not a zip archive (an .npz file is one: write it with numpy.savez)")?;
    let count = u16_at(zip, end + 10)? as usize;
    let mut at = u32_at(zip, end + 16)? as usize;
    if at == 0xFFFF_FFFF {
        return Err("a zip64 archive over 4 GiB is too large for a reference".into());
    }
    let mut entries = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        if u32_at(zip, at)? != ENTRY {
            return Err("the zip directory is corrupt".into());
        }
        let method = u16_at(zip, at + 10)?;
        let mut compressed = u32_at(zip, at + 20)? as u64;
        let mut size = u32_at(zip, at + 24)? as u64;
        let name_len = u16_at(zip, at + 28)? as usize;
        let extra_len = u16_at(zip, at + 30)? as usize;
        let comment_len = u16_at(zip, at + 32)? as usize;
        let mut local_header = u32_at(zip, at + 42)? as u64;
        let name_bytes = zip
            .get(at + 46..at + 46 + name_len)
            .ok_or("the zip directory is corrupt")?;
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        // Zip64: each 32-bit field that reads 0xFFFFFFFF is in the extra
        // field, in this order.
        let extra = zip
            .get(at + 46 + name_len..at + 46 + name_len + extra_len)
            .ok_or("the zip directory is corrupt")?;
        let mut e = 0;
        while e + 4 <= extra.len() {
            let (id, len) = (u16_at(extra, e)?, u16_at(extra, e + 2)? as usize);
            if id == 1 {
                let mut f = e + 4;
                for field in [&mut size, &mut compressed, &mut local_header] {
                    if *field == 0xFFFF_FFFF {
                        *field = u64_at(extra, f)?;
                        f += 8;
                    }
                }
            }
            e += 4 + len;
        }
        entries.push(ZipEntry {
            name,
            method,
            compressed,
            size,
            local_header,
        });
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(entries)
}

impl ZipEntry {
    fn read(&self, zip: &[u8]) -> Result<Vec<u8>, String> {
        if self.size > MAX_BYTES {
            return Err(format!(
                "{} bytes, over the {MAX_BYTES}-byte limit of a reference",
                self.size
            ));
        }
        let at = self.local_header as usize;
        if u32_at(zip, at)? != 0x0403_4b50 {
            return Err("the zip entry is corrupt".into());
        }
        let start = at + 30 + u16_at(zip, at + 26)? as usize + u16_at(zip, at + 28)? as usize;
        let data = zip
            .get(start..start + self.compressed as usize)
            .ok_or("the zip entry runs past the end of the file")?;
        match self.method {
            0 => Ok(data.to_vec()),
            8 => {
                let mut out = Vec::with_capacity(self.size as usize);
                flate2::read::DeflateDecoder::new(data)
                    .take(MAX_BYTES + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("cannot inflate: {e}"))?;
                Ok(out)
            }
            m => Err(format!(
                "compression method {m} (numpy writes stored or deflated entries)"
            )),
        }
    }
}

/// One `.npy` array (format versions 1-3, little-endian or single-byte types, C order).
pub fn read_npy(npy: &[u8]) -> Result<Array, String> {
    if npy.get(..6) != Some(b"\x93NUMPY") {
        return Err("not an .npy array".into());
    }
    let major = npy.get(6).copied().ok_or("truncated")?;
    let (header_len, start) = match major {
        1 => (u16_at(npy, 8)? as usize, 10),
        2 | 3 => (u32_at(npy, 8)? as usize, 12),
        v => return Err(format!("npy format version {v} is not known")),
    };
    let header = npy.get(start..start + header_len).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the header is not text")?;
    let descr = dict_value(header, "descr").ok_or("the header names no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = dict_value(header, "fortran_order").ok_or("the header has no 'fortran_order'")?;
    if fortran.starts_with("True") {
        return Err("Fortran order: save the array with numpy.ascontiguousarray first".into());
    }
    let shape_text = dict_value(header, "shape").ok_or("the header has no 'shape'")?;
    let shape_text = shape_text.trim_start_matches('(');
    let shape_text = &shape_text[..shape_text.find(')').ok_or("the shape is not a tuple")?];
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("shape dimension '{s}' is not a number")))
        .collect::<Result<_, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("the shape overflows")?;
    let data = &npy[start + header_len..];
    let values = decode(descr, data, count)?;
    Ok(Array { shape, values })
}

/// The text of `key`'s value in a Python dict literal (up to the next key).
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')').map(|i| i + 1)
    } else {
        rest.find(',')
    };
    Some(&rest[..end.unwrap_or(rest.len())])
}

fn decode(descr: &str, data: &[u8], count: usize) -> Result<Values, String> {
    let (order, kind, size) = match descr.as_bytes() {
        [o @ (b'<' | b'>' | b'|' | b'='), k, rest @ ..] => (
            *o,
            *k,
            std::str::from_utf8(rest).ok().and_then(|s| s.parse::<usize>().ok()),
        ),
        _ => return Err(format!("dtype '{descr}' is not known")),
    };
    if kind == b'O' {
        return Err("an object array (it needs pickle): save strings as numpy 'U' or 'S' arrays".into());
    }
    let size = size.ok_or_else(|| format!("dtype '{descr}' is not known"))?;
    if kind == b'U' {
        // `size` counts characters of four bytes (UCS-4).
        return decode_unicode(data, count, size);
    }
    if order == b'>' && size > 1 {
        return Err(format!("dtype '{descr}' is big-endian: save it as little-endian ('<')"));
    }
    let need = count.checked_mul(size).ok_or("the array is too large")?;
    let data = data
        .get(..need)
        .ok_or_else(|| format!("the data holds {} bytes, the shape needs {need}", data.len()))?;
    let chunks = data.chunks_exact(size.max(1));
    let numbers = |f: &dyn Fn(&[u8]) -> f64, integral| Values::Numbers {
        values: chunks.clone().map(f).collect(),
        integral,
    };
    Ok(match (kind, size) {
        (b'f', 2) => numbers(&|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64(), false),
        (b'f', 4) => numbers(&|c| f32::from_le_bytes(c.try_into().unwrap()) as f64, false),
        (b'f', 8) => numbers(&|c| f64::from_le_bytes(c.try_into().unwrap()), false),
        (b'b', 1) => numbers(&|c| (c[0] != 0) as u8 as f64, true),
        (b'i', 1) => numbers(&|c| c[0] as i8 as f64, true),
        (b'u', 1) => numbers(&|c| c[0] as f64, true),
        (b'i', 2) => numbers(&|c| i16::from_le_bytes([c[0], c[1]]) as f64, true),
        (b'u', 2) => numbers(&|c| u16::from_le_bytes([c[0], c[1]]) as f64, true),
        (b'i', 4) => numbers(&|c| i32::from_le_bytes(c.try_into().unwrap()) as f64, true),
        (b'u', 4) => numbers(&|c| u32::from_le_bytes(c.try_into().unwrap()) as f64, true),
        (b'i', 8) => numbers(&|c| i64::from_le_bytes(c.try_into().unwrap()) as f64, true),
        (b'u', 8) => numbers(&|c| u64::from_le_bytes(c.try_into().unwrap()) as f64, true),
        // Byte strings, padded with zeros.
        (b'S', _) => Values::Strings(chunks.map(|c| trim_zeros(c).to_vec()).collect()),
        _ => return Err(format!("dtype '{descr}' is not supported")),
    })
}

fn decode_unicode(data: &[u8], count: usize, chars: usize) -> Result<Values, String> {
    let need = count.checked_mul(chars * 4).ok_or("the array is too large")?;
    let data = data
        .get(..need)
        .ok_or_else(|| format!("the data holds {} bytes, the shape needs {need}", data.len()))?;
    let mut out = Vec::with_capacity(count);
    for item in data.chunks_exact((chars * 4).max(1)).take(count) {
        let mut s = String::new();
        for c in item.chunks_exact(4) {
            let code = u32::from_le_bytes(c.try_into().unwrap());
            if code == 0 {
                break;
            }
            s.push(char::from_u32(code).ok_or("a string holds an invalid character")?);
        }
        out.push(s.into_bytes());
    }
    // A zero-width dtype ('<U0') still has `count` empty strings.
    out.resize(count, Vec::new());
    Ok(Values::Strings(out))
}

fn trim_zeros(c: &[u8]) -> &[u8] {
    let end = c.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &c[..end]
}

/// A reference in the V2 JSON tensor format: `{"inputs": [...], "outputs":
/// [...]}` with `name`, `shape`, `datatype` and `data` per tensor.
pub fn read_v2_json(text: &[u8]) -> Result<BTreeMap<String, Array>, String> {
    let doc: serde_json::Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    let mut out = BTreeMap::new();
    for key in ["inputs", "outputs"] {
        let Some(list) = doc.get(key) else { continue };
        let list = list.as_array().ok_or_else(|| format!("'{key}' is not a list"))?;
        for t in list {
            let name = t
                .get("name")
                .and_then(|n| n.as_str())
                .ok_or_else(|| format!("a tensor of '{key}' has no name"))?;
            let shape: Vec<usize> = t
                .get("shape")
                .and_then(|s| s.as_array())
                .ok_or_else(|| format!("tensor '{name}' has no shape"))?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("tensor '{name}': the shape is not a list of sizes"))?;
            let mut flat = Vec::new();
            flatten(
                t.get("data").ok_or_else(|| format!("tensor '{name}' has no data"))?,
                &mut flat,
            );
            let values = if t.get("datatype").and_then(|d| d.as_str()) == Some("BYTES") {
                Values::Strings(
                    flat.iter()
                        .map(|v| v.as_str().map(|s| s.as_bytes().to_vec()))
                        .collect::<Option<_>>()
                        .ok_or_else(|| format!("tensor '{name}': BYTES data must be strings"))?,
                )
            } else {
                let integral = flat.iter().all(|v| v.is_i64() || v.is_u64() || v.is_boolean());
                Values::Numbers {
                    values: flat
                        .iter()
                        .map(|v| v.as_f64().or_else(|| v.as_bool().map(|b| b as u8 as f64)))
                        .collect::<Option<_>>()
                        .ok_or_else(|| format!("tensor '{name}': the data must be numbers or booleans"))?,
                    integral,
                }
            };
            let array = Array { shape, values };
            let want: usize = array.shape.iter().product();
            if array.len() != want {
                return Err(format!(
                    "tensor '{name}': {} values for shape {:?} ({want} expected)",
                    array.len(),
                    array.shape
                ));
            }
            out.insert(name.to_owned(), array);
        }
    }
    if out.is_empty() {
        return Err("no tensor under 'inputs' or 'outputs'".into());
    }
    Ok(out)
}

fn flatten<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    match v {
        serde_json::Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    /// A stored (uncompressed) zip of the given files, as `np.savez` writes.
    fn zip(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let (mut out, mut directory) = (Vec::new(), Vec::new());
        for (name, data) in files {
            let offset = out.len() as u32;
            out.extend(0x0403_4b50u32.to_le_bytes());
            out.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((name.len() as u16).to_le_bytes());
            out.extend(0u16.to_le_bytes());
            out.extend(name.as_bytes());
            out.extend(data);
            directory.extend(0x0201_4b50u32.to_le_bytes());
            directory.extend([20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            directory.extend((data.len() as u32).to_le_bytes());
            directory.extend((data.len() as u32).to_le_bytes());
            directory.extend((name.len() as u16).to_le_bytes());
            directory.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            directory.extend(offset.to_le_bytes());
            directory.extend(name.as_bytes());
        }
        let at = out.len() as u32;
        out.extend(&directory);
        out.extend(0x0605_4b50u32.to_le_bytes());
        out.extend([0, 0, 0, 0]);
        out.extend((files.len() as u16).to_le_bytes());
        out.extend((files.len() as u16).to_le_bytes());
        out.extend((directory.len() as u32).to_le_bytes());
        out.extend(at.to_le_bytes());
        out.extend([0, 0]);
        out
    }

    #[test]
    fn reads_floats_and_strings_from_an_npz() {
        let floats: Vec<u8> = [1.5f32, -2.0, 3.0, 4.25].iter().flat_map(|f| f.to_le_bytes()).collect();
        let mut unicode = Vec::new();
        for s in ["ab", "c"] {
            let mut chars: Vec<u32> = s.chars().map(|c| c as u32).collect();
            chars.resize(2, 0);
            unicode.extend(chars.iter().flat_map(|c| c.to_le_bytes()));
        }
        let file = zip(&[
            ("x.npy", npy("<f4", "(2, 2)", &floats)),
            ("city.npy", npy("<U2", "(2,)", &unicode)),
        ]);
        let arrays = read_npz(&file).unwrap();
        assert_eq!(arrays["x"].shape, vec![2, 2]);
        assert_eq!(
            arrays["x"].values,
            Values::Numbers {
                values: vec![1.5, -2.0, 3.0, 4.25],
                integral: false
            }
        );
        assert_eq!(
            arrays["city"].values,
            Values::Strings(vec![b"ab".to_vec(), b"c".to_vec()])
        );
    }

    #[test]
    fn refuses_what_it_cannot_read_with_the_reason() {
        let e = read_npz(b"not a zip").unwrap_err();
        assert!(e.contains("not a zip archive"), "{e}");
        let object = zip(&[("x.npy", npy("|O", "(1,)", &[0; 8]))]);
        let e = read_npz(&object).unwrap_err();
        assert!(e.contains("array 'x'") && e.contains("pickle"), "{e}");
        let short = zip(&[("x.npy", npy("<f8", "(4,)", &[0; 8]))]);
        let e = read_npz(&short).unwrap_err();
        assert!(e.contains("the shape needs 32"), "{e}");
    }

    #[test]
    fn reads_the_v2_json_format() {
        let text = br#"{"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4.5]]}],
                        "outputs": [{"name": "y", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}"#;
        let arrays = read_v2_json(text).unwrap();
        assert_eq!(arrays["x"].rows(), 2);
        assert_eq!(arrays["x"].row_shape(), &[2]);
        assert_eq!(arrays["y"].values, Values::Strings(vec![b"a".to_vec(), b"b".to_vec()]));
        let e =
            read_v2_json(br#"{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1]}]}"#).unwrap_err();
        assert!(e.contains("tensor 'x'"), "{e}");
    }
}
