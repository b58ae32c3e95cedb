//! Instances from distance and contour predictions (being written).
