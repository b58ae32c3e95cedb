//! Iteration of a volume in blocks with a halo, for out-of-core and parallel work.

use crate::{CoreError, Result, Roi};

/// A regular grid of blocks over a volume; each block also knows its region grown by a
/// halo (clipped to the volume), which is what a blockwise algorithm reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockGrid {
    volume: Roi,
    block_shape: Vec<u64>,
    halo: Vec<u64>,
}

/// One block of a [`BlockGrid`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Position of the block in the grid (block units, raster order).
    pub index: Vec<u64>,
    /// The voxels this block owns; the cores of all blocks tile the volume exactly.
    pub core: Roi,
    /// `core` grown by the halo and clipped to the volume: what to read.
    pub with_halo: Roi,
}

impl Block {
    /// The core in the coordinates of `with_halo`, to crop a result read with the halo.
    pub fn core_in_halo(&self) -> Roi {
        // `core` is inside `with_halo` by construction.
        Roi::new(
            self.core
                .start()
                .iter()
                .zip(self.with_halo.start())
                .map(|(c, h)| c - h)
                .collect::<Vec<_>>(),
            self.core.shape().to_vec(),
        )
        .unwrap_or_else(|_| self.core.clone())
    }
}

impl BlockGrid {
    /// A grid of `block_shape` blocks over a volume of `volume_shape`, each read with `halo`
    /// extra voxels per side. Edge blocks are smaller where the volume does not divide.
    ///
    /// # Errors
    /// [`CoreError::DimensionMismatch`] if the three lengths differ, [`CoreError::InvalidParameter`]
    /// if a block side is 0.
    pub fn new(volume_shape: &[u64], block_shape: &[u64], halo: &[u64]) -> Result<Self> {
        for (what, len) in [("block shape", block_shape.len()), ("halo", halo.len())] {
            if len != volume_shape.len() {
                return Err(CoreError::DimensionMismatch {
                    what: what.into(),
                    expected: volume_shape.len(),
                    got: len,
                });
            }
        }
        if block_shape.contains(&0) {
            return Err(CoreError::InvalidParameter {
                name: "block shape",
                reason: format!("{block_shape:?} has a zero side; every side must be ≥ 1"),
            });
        }
        Ok(Self {
            volume: Roi::from_shape(volume_shape.to_vec()),
            block_shape: block_shape.to_vec(),
            halo: halo.to_vec(),
        })
    }

    /// The whole volume as a region.
    pub fn volume(&self) -> &Roi {
        &self.volume
    }

    /// The nominal block shape.
    pub fn block_shape(&self) -> &[u64] {
        &self.block_shape
    }

    /// The halo added on each side.
    pub fn halo(&self) -> &[u64] {
        &self.halo
    }

    /// Number of blocks along each axis.
    pub fn grid_shape(&self) -> Vec<u64> {
        self.volume
            .shape()
            .iter()
            .zip(&self.block_shape)
            .map(|(n, b)| n.div_ceil(*b))
            .collect()
    }

    /// Total number of blocks.
    pub fn num_blocks(&self) -> u64 {
        self.grid_shape().iter().product()
    }

    /// The block at grid position `index`, or `None` outside the grid.
    pub fn block(&self, index: &[u64]) -> Option<Block> {
        let grid = self.grid_shape();
        if index.len() != grid.len() || index.iter().zip(&grid).any(|(i, g)| i >= g) {
            return None;
        }
        let start: Vec<u64> = index
            .iter()
            .zip(&self.block_shape)
            .map(|(i, b)| i * b)
            .collect();
        let core = Roi::new(start, self.block_shape.clone())
            .ok()?
            .intersect(&self.volume)?;
        let with_halo = core.grow(&self.halo).ok()?.intersect(&self.volume)?;
        Some(Block {
            index: index.to_vec(),
            core,
            with_halo,
        })
    }

    /// All blocks in raster (C) order of their grid index.
    pub fn iter(&self) -> impl Iterator<Item = Block> + '_ {
        let grid = self.grid_shape();
        let total = self.num_blocks();
        (0..total).filter_map(move |mut flat| {
            let mut index = vec![0; grid.len()];
            for axis in (0..grid.len()).rev() {
                index[axis] = flat % grid[axis];
                flat /= grid[axis];
            }
            self.block(&index)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edge_blocks_are_clipped() {
        let g = BlockGrid::new(&[10, 7], &[4, 4], &[1, 2]).unwrap();
        assert_eq!(g.grid_shape(), vec![3, 2]);
        let last = g.block(&[2, 1]).unwrap();
        assert_eq!(last.core, Roi::new([8, 4], [2, 3]).unwrap());
        assert_eq!(last.with_halo, Roi::new([7, 2], [3, 5]).unwrap());
        assert_eq!(last.core_in_halo(), Roi::new([1, 2], [2, 3]).unwrap());
        assert!(g.block(&[3, 0]).is_none());
        assert!(BlockGrid::new(&[4], &[0], &[0]).is_err());
        assert!(BlockGrid::new(&[4, 4], &[2], &[0, 0]).is_err());
    }

    proptest! {
        #[test]
        fn cores_tile_the_volume(
            shape in prop::array::uniform3(1u64..12),
            block in prop::array::uniform3(1u64..6),
            halo in prop::array::uniform3(0u64..3),
        ) {
            let g = BlockGrid::new(&shape, &block, &halo).unwrap();
            let mut count = vec![0u8; shape.iter().product::<u64>() as usize];
            let mut n = 0;
            for b in g.iter() {
                n += 1;
                prop_assert!(b.with_halo.contains(&b.core));
                prop_assert!(g.volume().contains(&b.with_halo));
                for z in b.core.ranges()[0].clone() {
                    for y in b.core.ranges()[1].clone() {
                        for x in b.core.ranges()[2].clone() {
                            count[((z * shape[1] + y) * shape[2] + x) as usize] += 1;
                        }
                    }
                }
            }
            prop_assert_eq!(n, g.num_blocks());
            prop_assert!(count.iter().all(|&c| c == 1));
        }
    }
}
