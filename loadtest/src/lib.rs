//! Load generator for the Brewlytics API with end-to-end freshness.
