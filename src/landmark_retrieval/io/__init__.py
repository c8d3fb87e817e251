"""Work-directory layout, atomic files, the HDF5 feature store, dataset and image reading, shards, progress."""
