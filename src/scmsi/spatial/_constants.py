"""Keys that :mod:`scmsi.spatial` reads and writes (squidpy/scanpy conventions where they exist)."""

# obsm: spot coordinates; uns: images and scale factors; obsp[f"{SPATIAL_KEY}_connectivities"]
SPATIAL_KEY = "spatial"
# default key_added of spatial_domains: obs labels, uns params
DOMAIN_KEY = "scmsi_domain"
