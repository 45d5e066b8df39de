//! llama.cpp's model file types: the names llama-quantize takes, the
//! `general.file_type` numbers written into a file, and the tensor type
//! most tensors of each get. One table, read by every lookup.

use subllm_kernels::GgmlType;

/// A model file type, named as llama-quantize names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum Ftype {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

/// Each file type with its name, its `general.file_type` number and the
/// type most of its tensors get, in llama-quantize's listing order.
const TABLE: [(Ftype, &str, u32, GgmlType); 13] = [
    (Ftype::Q8_0, "Q8_0", 7, GgmlType::Q8_0),
    (Ftype::Q4_0, "Q4_0", 2, GgmlType::Q4_0),
    (Ftype::Q4_1, "Q4_1", 3, GgmlType::Q4_1),
    (Ftype::Q5_0, "Q5_0", 8, GgmlType::Q5_0),
    (Ftype::Q5_1, "Q5_1", 9, GgmlType::Q5_1),
    (Ftype::Q4_K_S, "Q4_K_S", 14, GgmlType::Q4K),
    (Ftype::Q4_K_M, "Q4_K_M", 15, GgmlType::Q4K),
    (Ftype::Q5_K_S, "Q5_K_S", 16, GgmlType::Q5K),
    (Ftype::Q5_K_M, "Q5_K_M", 17, GgmlType::Q5K),
    (Ftype::Q6_K, "Q6_K", 18, GgmlType::Q6K),
    (Ftype::F16, "F16", 1, GgmlType::F16),
    (Ftype::BF16, "BF16", 32, GgmlType::BF16),
    (Ftype::F32, "F32", 0, GgmlType::F32),
];

impl Ftype {
    /// Every file type, in llama-quantize's listing order.
    pub const ALL: [Ftype; 13] = {
        let mut all = [Ftype::F32; 13];
        let mut i = 0;
        while i < TABLE.len() {
            all[i] = TABLE[i].0;
            i += 1;
        }
        all
    };

    fn row(self) -> &'static (Ftype, &'static str, u32, GgmlType) {
        TABLE
            .iter()
            .find(|r| r.0 == self)
            .expect("every type is listed")
    }

    /// llama-quantize's name (`Q4_K_M`).
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// llama.cpp's `general.file_type` number.
    pub fn id(self) -> u32 {
        self.row().2
    }

    /// The tensor type most tensors get.
    pub fn default_type(self) -> GgmlType {
        self.row().3
    }

    /// The file type named `name` exactly (upper case, as listed).
    pub fn from_name(name: &str) -> Option<Ftype> {
        TABLE.iter().find(|r| r.1 == name).map(|r| r.0)
    }

    /// The file type with `general.file_type` number `id`.
    pub fn from_id(id: u32) -> Option<Ftype> {
        TABLE.iter().find(|r| r.2 == id).map(|r| r.0)
    }

    /// The file type of a file whose matrices are all `ty` (the
    /// converter's single output type): the first listed with that
    /// default, so Q4_K is `Q4_K_S`, the one without a mixture.
    pub fn of_uniform(ty: GgmlType) -> Option<Ftype> {
        TABLE.iter().find(|r| r.3 == ty).map(|r| r.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_are_llama_cpps_and_unique() {
        // from llama.cpp's llama_ftype enum (include/llama.h)
        let want = [
            ("F32", 0),
            ("F16", 1),
            ("Q4_0", 2),
            ("Q4_1", 3),
            ("Q8_0", 7),
            ("Q5_0", 8),
            ("Q5_1", 9),
            ("Q4_K_S", 14),
            ("Q4_K_M", 15),
            ("Q5_K_S", 16),
            ("Q5_K_M", 17),
            ("Q6_K", 18),
            ("BF16", 32),
        ];
        assert_eq!(Ftype::ALL.len(), want.len());
        for (name, id) in want {
            let f = Ftype::from_name(name).expect(name);
            assert_eq!((f.name(), f.id(), Ftype::from_id(id)), (name, id, Some(f)));
        }
        assert_eq!(Ftype::of_uniform(GgmlType::Q4K), Some(Ftype::Q4_K_S));
        assert_eq!(Ftype::of_uniform(GgmlType::Q8_0), Some(Ftype::Q8_0));
        assert_eq!(Ftype::of_uniform(GgmlType::Q8K), None);
        assert_eq!(Ftype::from_id(4), None);
    }
}
