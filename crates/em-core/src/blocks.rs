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

/// A block of whole chunks for streaming copies: as many chunks as fit in `budget_bytes`
/// of `bytes_per_voxel` values (at least one), taken along the last (fastest) axis first,
/// so that each read and write covers whole chunks and long rows. Sides are multiples of
/// `chunks` and may pass the volume's edge, where a [`BlockGrid`] clips them.
pub fn chunk_aligned_block(
    shape: &[u64],
    chunks: &[u64],
    bytes_per_voxel: u64,
    budget_bytes: u64,
) -> Vec<u64> {
    let chunk_bytes = chunks.iter().product::<u64>() * bytes_per_voxel;
    let mut budget = (budget_bytes / chunk_bytes.max(1)).max(1);
    let mut block = chunks.to_vec();
    for axis in (0..shape.len()).rev() {
        let chunk = chunks[axis].max(1);
        let take = shape[axis].div_ceil(chunk).min(budget).max(1);
        block[axis] = chunk * take;
        budget = (budget / take).max(1);
    }
    block
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunk_aligned_blocks_fill_the_fast_axes_first_within_the_budget() {
        // 64³ u8 chunks are 256 KiB: 256 of them fit in 64 MiB.
        let mib64 = 64 << 20;
        assert_eq!(
            chunk_aligned_block(&[1000, 1000, 1000], &[64, 64, 64], 1, mib64),
            [64, 1024, 1024]
        );
        assert_eq!(
            chunk_aligned_block(&[10, 20, 30], &[4, 8, 8], 1, mib64),
            [12, 24, 32]
        );
        // A chunk larger than the budget is still read whole.
        assert_eq!(
            chunk_aligned_block(&[4096; 3], &[512; 3], 1, mib64),
            [512; 3]
        );
    }

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
