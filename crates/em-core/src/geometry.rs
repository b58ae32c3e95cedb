//! Physical geometry: voxel size in nanometres.

use serde::{Deserialize, Serialize};

use crate::{CoreError, Result};

/// Physical size of a voxel in nanometres, `(z, y, x)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "[f64; 3]", into = "[f64; 3]")]
pub struct VoxelSize([f64; 3]);

impl VoxelSize {
    /// A voxel size; every side must be finite and positive.
    ///
    /// # Errors
    /// [`CoreError::InvalidParameter`] naming the bad side.
    pub fn new(zyx: [f64; 3]) -> Result<Self> {
        if let Some(v) = zyx.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(CoreError::InvalidParameter {
                name: "voxel size",
                reason: format!("{zyx:?} contains {v}; every side must be a positive number of nm"),
            });
        }
        Ok(Self(zyx))
    }

    /// The sizes `(z, y, x)` in nm.
    pub fn zyx(&self) -> [f64; 3] {
        self.0
    }

    /// A voxel index `(z, y, x)` in nm.
    pub fn to_nm(&self, index: [u64; 3]) -> [f64; 3] {
        [
            index[0] as f64 * self.0[0],
            index[1] as f64 * self.0[1],
            index[2] as f64 * self.0[2],
        ]
    }

    /// The ratio of the z size to the in-plane size: > 1 for anisotropic serial-section data.
    pub fn anisotropy(&self) -> f64 {
        self.0[0] / self.0[1].max(self.0[2])
    }
}

impl Default for VoxelSize {
    /// Isotropic 1 nm: positions in voxels.
    fn default() -> Self {
        Self([1.0; 3])
    }
}

impl TryFrom<[f64; 3]> for VoxelSize {
    type Error = CoreError;
    fn try_from(v: [f64; 3]) -> Result<Self> {
        Self::new(v)
    }
}

impl From<VoxelSize> for [f64; 3] {
    fn from(v: VoxelSize) -> Self {
        v.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_and_converts() {
        let v = VoxelSize::new([40.0, 4.0, 4.0]).unwrap();
        assert_eq!(v.to_nm([2, 3, 4]), [80.0, 12.0, 16.0]);
        assert_eq!(v.anisotropy(), 10.0);
        assert!(VoxelSize::new([0.0, 1.0, 1.0]).is_err());
        assert!(VoxelSize::new([f64::NAN, 1.0, 1.0]).is_err());
        let e: std::result::Result<VoxelSize, _> = serde_json::from_str("[1, -2, 3]");
        assert!(e.is_err());
    }
}
