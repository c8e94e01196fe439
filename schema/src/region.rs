//! [`RegionCell`]: the only notion of place downstream of ingest.
//!
//! A region is an H3 cell at a resolution no finer than [`MAX_RESOLUTION`]
//! (H3 resolution 6, ~36 km² per cell). The type cannot be built from a finer
//! cell, so no code path can carry a precise location in a `RegionCell`.

use h3o::{CellIndex, LatLng, Resolution};
use std::fmt;
use std::str::FromStr;

/// The privacy floor: no region is ever finer than H3 resolution 6.
pub const MAX_RESOLUTION: u8 = 6;

/// Why a coordinate or cell could not become a region.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegionError {
    #[error("latitude must be a finite number in -90..=90")]
    Latitude,
    #[error("longitude must be a finite number in -180..=180")]
    Longitude,
    #[error("not a valid H3 cell index")]
    InvalidCell,
    #[error("resolution {0} is finer than the privacy floor ({MAX_RESOLUTION})")]
    TooFine(u8),
    #[error("cell resolution {cell} is coarser than the configured region resolution {target}")]
    TooCoarse { cell: u8, target: u8 },
    #[error("{0} is not an H3 resolution")]
    Resolution(u8),
    #[error("an area must be {0}")]
    Area(&'static str),
    #[error("the area covers more cells than allowed")]
    AreaTooLarge,
}

/// The resolution regions are coarsened to; validated against the floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionResolution(Resolution);

impl RegionResolution {
    /// ```
    /// use hushmap_schema::region::RegionResolution;
    /// assert!(RegionResolution::new(5).is_ok());
    /// assert!(RegionResolution::new(7).is_err()); // finer than the floor
    /// ```
    pub fn new(res: u8) -> Result<Self, RegionError> {
        if res > MAX_RESOLUTION {
            return Err(RegionError::TooFine(res));
        }
        let r = Resolution::try_from(res).map_err(|_| RegionError::TooFine(res))?;
        Ok(RegionResolution(r))
    }

    pub fn get(self) -> u8 {
        u8::from(self.0)
    }
}

/// An H3 cell no finer than [`MAX_RESOLUTION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionCell(CellIndex);

impl RegionCell {
    /// Coarsens a coordinate to the cell that contains it.
    ///
    /// ```
    /// use hushmap_schema::{RegionCell, region::RegionResolution};
    /// let res = RegionResolution::new(5).unwrap();
    /// let cell = RegionCell::from_coordinate(19.076, 72.8777, res).unwrap();
    /// assert_eq!(cell.resolution(), 5);
    /// ```
    pub fn from_coordinate(lat: f64, lon: f64, res: RegionResolution) -> Result<Self, RegionError> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(RegionError::Latitude);
        }
        if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
            return Err(RegionError::Longitude);
        }
        let ll = LatLng::new(lat, lon).map_err(|_| RegionError::Latitude)?;
        Ok(RegionCell(ll.to_cell(res.0)))
    }

    /// Coarsens a client-sent H3 cell (any resolution at least as fine as
    /// `res`) to `res`.
    pub fn from_client_cell(text: &str, res: RegionResolution) -> Result<Self, RegionError> {
        let cell = CellIndex::from_str(text).map_err(|_| RegionError::InvalidCell)?;
        let parent = cell.parent(res.0).ok_or(RegionError::TooCoarse {
            cell: u8::from(cell.resolution()),
            target: res.get(),
        })?;
        Ok(RegionCell(parent))
    }

    /// Decodes a raw H3 index, refusing any cell finer than the floor.
    pub fn from_raw(raw: u64) -> Result<Self, RegionError> {
        let cell = CellIndex::try_from(raw).map_err(|_| RegionError::InvalidCell)?;
        Self::from_cell(cell)
    }

    fn from_cell(cell: CellIndex) -> Result<Self, RegionError> {
        let res = u8::from(cell.resolution());
        if res > MAX_RESOLUTION {
            return Err(RegionError::TooFine(res));
        }
        Ok(RegionCell(cell))
    }

    pub fn raw(self) -> u64 {
        u64::from(self.0)
    }

    pub fn resolution(self) -> u8 {
        u8::from(self.0.resolution())
    }

    /// The enclosing cell at a coarser resolution (`None` if `res` is finer).
    pub fn parent(self, res: u8) -> Option<RegionCell> {
        let r = Resolution::try_from(res).ok()?;
        self.0.parent(r).map(RegionCell)
    }

    /// The shard (of `shards`) that owns this cell and every cell in the
    /// same `coarsest`-resolution ancestor, so that one shard sees whole
    /// trees of the released hierarchy. A fixed mix of the ancestor's H3
    /// index (whose low bits are constant), so every process agrees.
    /// `None` when this cell is coarser than `coarsest` or `shards` is 0.
    ///
    /// ```
    /// # use hushmap_schema::RegionCell;
    /// # use hushmap_schema::region::RegionResolution;
    /// let cell = RegionCell::from_coordinate(51.5, -0.12, RegionResolution::new(5).unwrap()).unwrap();
    /// let parent = cell.parent(3).unwrap();
    /// assert_eq!(cell.shard(3, 12), parent.shard(3, 12));
    /// assert!(cell.shard(3, 12).unwrap() < 12);
    /// ```
    pub fn shard(self, coarsest: u8, shards: u32) -> Option<u32> {
        if shards == 0 {
            return None;
        }
        let ancestor = self.parent(coarsest)?;
        // SplitMix64's finaliser: every input bit moves every output bit.
        let mut z = ancestor.raw();
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Some((z % u64::from(shards)) as u32)
    }

    /// Every cell at the finer resolution `res` inside this one (`None` if
    /// `res` is coarser than this cell).
    pub fn children(self, res: u8) -> Option<Vec<RegionCell>> {
        let r = Resolution::try_from(res).ok()?;
        if r < self.0.resolution() {
            return None;
        }
        Some(self.0.children(r).map(RegionCell).collect())
    }

    /// Every cell at resolution `res` that touches the polygon with these
    /// (lat, lon) vertices (at least three; the ring is closed for you), so
    /// that every point of the area lies in one of them. Refuses, without
    /// materialising them, areas of more than `max_cells` cells.
    ///
    /// ```
    /// use hushmap_schema::RegionCell;
    /// // A 0.2° box around central Berlin at resolution 5 (~250 km² cells).
    /// let cells = RegionCell::covering(
    ///     &[(52.4, 13.3), (52.4, 13.5), (52.6, 13.5), (52.6, 13.3)], 5, 1000).unwrap();
    /// let inside = RegionCell::from_coordinate(52.5, 13.4,
    ///     hushmap_schema::region::RegionResolution::new(5).unwrap()).unwrap();
    /// assert!(cells.contains(&inside) && cells.len() < 20);
    /// ```
    pub fn covering(
        vertices: &[(f64, f64)],
        res: u8,
        max_cells: usize,
    ) -> Result<Vec<RegionCell>, RegionError> {
        use h3o::geom::{ContainmentMode, TilerBuilder};
        let resolution = Resolution::try_from(res).map_err(|_| RegionError::Resolution(res))?;
        let valid = |&(lat, lon): &(f64, f64)| {
            lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0
        };
        if vertices.len() < 3 || !vertices.iter().all(valid) {
            return Err(RegionError::Area(
                "at least three valid (lat, lon) vertices",
            ));
        }
        let ring: Vec<(f64, f64)> = vertices.iter().map(|&(lat, lon)| (lon, lat)).collect();
        let polygon = geo::Polygon::new(geo::LineString::from(ring), Vec::new());
        let mut tiler = TilerBuilder::new(resolution)
            .containment_mode(ContainmentMode::IntersectsBoundary)
            .build();
        tiler
            .add(polygon)
            .map_err(|_| RegionError::Area("an invalid polygon"))?;
        if tiler.coverage_size_hint() > max_cells.saturating_mul(4).max(64) {
            return Err(RegionError::AreaTooLarge);
        }
        let cells: Vec<RegionCell> = tiler.into_coverage().map(RegionCell).collect();
        if cells.len() > max_cells {
            return Err(RegionError::AreaTooLarge);
        }
        Ok(cells)
    }

    /// The cell outline as (lat, lon) vertices, for drawing maps. Cell
    /// outlines are public geometry, not anyone's location.
    pub fn boundary(self) -> Vec<(f64, f64)> {
        self.0
            .boundary()
            .iter()
            .map(|ll| (ll.lat(), ll.lng()))
            .collect()
    }

    /// The cell's centre as (lat, lon).
    pub fn center(self) -> (f64, f64) {
        let ll = LatLng::from(self.0);
        (ll.lat(), ll.lng())
    }
}

impl fmt::Display for RegionCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RegionCell {
    type Err = RegionError;

    /// Parses a region label (an H3 index string), refusing finer cells.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let cell = CellIndex::from_str(s).map_err(|_| RegionError::InvalidCell)?;
        Self::from_cell(cell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_never_finer_than_configured() {
        for res in 0..=MAX_RESOLUTION {
            let r = RegionResolution::new(res).unwrap();
            for (lat, lon) in [
                (19.076, 72.8777),
                (51.5072, -0.1276),
                (-33.8688, 151.2093),
                (90.0, 180.0),
            ] {
                let cell = RegionCell::from_coordinate(lat, lon, r).unwrap();
                assert_eq!(cell.resolution(), res);
            }
        }
    }

    #[test]
    fn floor_is_enforced_everywhere() {
        for res in (MAX_RESOLUTION + 1)..=15 {
            assert_eq!(RegionResolution::new(res), Err(RegionError::TooFine(res)));
        }
        // A resolution-9 cell can be parsed only by coarsening it.
        let fine = LatLng::new(19.076, 72.8777)
            .unwrap()
            .to_cell(Resolution::Nine);
        assert_eq!(
            RegionCell::from_raw(u64::from(fine)),
            Err(RegionError::TooFine(9))
        );
        assert_eq!(
            fine.to_string().parse::<RegionCell>(),
            Err(RegionError::TooFine(9))
        );
        let coarse =
            RegionCell::from_client_cell(&fine.to_string(), RegionResolution::new(5).unwrap())
                .unwrap();
        assert_eq!(coarse.resolution(), 5);
    }

    #[test]
    fn client_cell_coarser_than_target_is_refused() {
        let r3 = LatLng::new(19.076, 72.8777)
            .unwrap()
            .to_cell(Resolution::Three);
        let err = RegionCell::from_client_cell(&r3.to_string(), RegionResolution::new(5).unwrap());
        assert_eq!(err, Err(RegionError::TooCoarse { cell: 3, target: 5 }));
    }

    #[test]
    fn invalid_coordinates_and_cells() {
        let r = RegionResolution::new(5).unwrap();
        assert_eq!(
            RegionCell::from_coordinate(f64::NAN, 0.0, r),
            Err(RegionError::Latitude)
        );
        assert_eq!(
            RegionCell::from_coordinate(90.5, 0.0, r),
            Err(RegionError::Latitude)
        );
        assert_eq!(
            RegionCell::from_coordinate(0.0, f64::INFINITY, r),
            Err(RegionError::Longitude)
        );
        assert_eq!(
            RegionCell::from_coordinate(0.0, -180.1, r),
            Err(RegionError::Longitude)
        );
        assert_eq!(
            RegionCell::from_client_cell("not-a-cell", r),
            Err(RegionError::InvalidCell)
        );
        assert_eq!(RegionCell::from_raw(0), Err(RegionError::InvalidCell));
    }
}
