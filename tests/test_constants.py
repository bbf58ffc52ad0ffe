"""scmsi._constants: the keys scmsi writes."""

from scmsi import _constants as C


def test_default_keys_are_todays_keys():
    k = C.OutputKeys()
    assert k.embedding == C.X_KEY == "X_scmsi"
    assert k.coef == C.COEF_KEY == "scmsi_coef"
    assert k.embedding_map == C.EMBEDDING_MAP_KEY == "scmsi_embedding"
    assert k.weights == C.WEIGHTS_KEY == "scmsi_modality_weights"
    assert k.leiden == C.LEIDEN_KEY == "scmsi_leiden"
    assert k.clusters("kmeans") == C.KMEANS_KEY == "scmsi_kmeans"
    assert (k.connectivities, k.distances) == ("scmsi_connectivities", "scmsi_distances")
    assert k.latent("rna") == "X_scmsi_rna"
    assert k.umap == C.UMAP_KEY == "X_umap"


def test_another_prefix_names_every_key_apart():
    default, foo = C.OutputKeys(), C.OutputKeys("foo")
    names = (
        "embedding",
        "embedding_map",
        "coef",
        "weights",
        "connectivities",
        "distances",
        "leiden",
        "umap",
    )
    for n in names:
        assert getattr(foo, n) != getattr(default, n), n
        assert "foo" in getattr(foo, n), n
    assert foo.latent("prot") == "X_foo_prot"


def test_mosaic_flags_use_the_prefix():
    from scmsi._mosaic import has_key, mask_registry_key

    assert has_key("prot") == "scmsi_has_prot"
    assert mask_registry_key("prot") == "scmsi_mask_prot"
