"""Before the labels (issue 25), on frozen features: self-taught clustering with a
neighbourhood-consistency head (:class:`ClusterHead`, SCAN), its scores against known classes
(Hungarian accuracy, NMI) and the k-means baseline, and which images to label next
(TypiClust's typical-and-diverse picks, or uncertain ones spread over the feature space).

Numpy features in, labels or ranks out: the output of a
:class:`~graft.features.extractor.FeatureExtractor`. torch is imported only to train a head.
"""
from graft.clustering.embedding import Projection, nearest_neighbours, typicality
from graft.clustering.scan import ClusterHead, cluster_features
from graft.clustering.scoring import (
           cluster_accuracy,
           cluster_scores,
           estimate_clusters,
           kmeans_clusters,
           match_clusters,
)
from graft.clustering.selection import STRATEGIES, mean_pairwise_distance, select_next, select_typical

__all__ = ["STRATEGIES", "ClusterHead", "Projection", "cluster_accuracy", "cluster_features", "cluster_scores",
           "estimate_clusters", "kmeans_clusters", "match_clusters", "mean_pairwise_distance", "nearest_neighbours",
           "select_next", "select_typical", "typicality"]
