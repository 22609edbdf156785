"""Compute-buffer rules, fitted from above on recorded loads: written by
`bench/compute_fit.py fit --write` (bench/compute_runs.json and the GPU fixtures);
do not edit by hand. The features are rpctui.plan.compute.FEATURES."""

#: flavour[+pp]/role/fa -> one coefficient vector per phase of the layer graph
#: (attention, then feed-forward); the estimate is the larger of the two
RULES: dict[str, tuple[tuple[float, ...], ...]] = {
    'ik/host/fa': (
        (1.0201, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0),
        (0.1509, 0.2898, 0.2173, 0.5, 0.0, 0.0, 0.0),
    ),
    'ik/host/nofa': (
        (0.9913, 0.0, 0.0, 0.0157, 0.1254, 0.0, 0.0),
        (0.143, 0.2744, 0.2058, 1.0144, 0.0, 0.0, 0.0059),
    ),
    'ik/layers/fa': (
        (8.0001, 0.0, 0.0, 0.4934, 0.0, 0.0, 0.0067),
        (1.1608, 3.4823, 0.0, 0.0, 0.0, 0.0, 0.2282),
    ),
    'ik/layers/nofa': (
        (3.9606, 0.0, 0.0, 0.1297, 1.0371, 0.0, 0.0934),
        (1.2038, 3.6112, 0.0, 0.8734, 0.0, 0.0, 0.0008),
    ),
    'ik/output/fa': (
        (2.0, 0.0, 0.0, 0.0134, 0.0, 0.9997, 0.0067),
        (0.2959, 0.5681, 0.4261, 0.0134, 0.0, 0.9997, 0.0067),
    ),
    'ik/output/nofa': (
        (2.0, 0.0, 0.0, 0.0, 0.0, 0.9999, 0.0067),
        (0.2959, 0.5681, 0.4261, 0.0051, 0.0, 1.0003, 0.0001),
    ),
    'mainline+pp/host/fa': (
        (5.0993, 0.0, 0.0, 2.0208, 0.0, 0.0, 0.0),
        (0.301, 0.0001, 1.2037, 2.0047, 0.0, 0.0, 0.0),
    ),
    'mainline+pp/host/nofa': (
        (9.0715, 0.0, 0.0, 0.0616, 0.4927, 0.0, 0.0015),
        (8.9043, 0.0558, 0.0418, 4.0029, 0.0, 0.0, 0.0015),
    ),
    'mainline+pp/layers/fa': (
        (16.0125, 0.0, 0.0, 2.0296, 0.0, 0.0, 0.0048),
        (1.1182, 0.0001, 4.4726, 2.0334, 0.0, 0.0, 0.0025),
    ),
    'mainline+pp/layers/nofa': (
        (12.5982, 0.0, 0.0, 0.1803, 1.4418, 0.0, 0.0068),
        (2.7754, 5.0851, 4.3213, 6.0201, 0.0, 0.0, 0.0),
    ),
    'mainline+pp/output/fa': (
        (4.92, 0.0, 0.0, 0.0082, 0.0, 1.0176, 0.0),
        (0.8321, 1.396, 1.467, 1.6901, 0.0, 1.0056, 0.0),
    ),
    'mainline+pp/output/nofa': (
        (9.0268, 0.0, 0.0, 0.0614, 0.4907, 1.0005, 0.0034),
        (8.9265, 0.0335, 0.0251, 3.9867, 0.0, 1.0005, 0.0034),
    ),
    'mainline/host/fa': (
        (2.0687, 0.0, 0.0, 0.4897, 0.0, 0.0, 0.0003),
        (0.3061, 0.5876, 0.4407, 0.4897, 0.0, 0.0, 0.0003),
    ),
    'mainline/host/nofa': (
        (2.9985, 0.0, 0.0, 0.0155, 0.124, 0.0, 0.0049),
        (2.9985, 0.0, 0.0, 1.0075, 0.0, 0.0, 0.0049),
    ),
    'mainline/layers/fa': (
        (12.0178, 0.0, 0.0, 0.4978, 0.0, 0.0, 0.0034),
        (0.8836, 0.0, 3.5342, 0.5001, 0.0, 0.0, 0.0),
    ),
    'mainline/layers/nofa': (
        (8.9613, 0.0, 0.0, 0.1078, 0.8621, 0.0, 0.0144),
        (0.0, 3.0067, 2.2699, 7.0005, 0.0, 0.0, 0.0),
    ),
    'mainline/output/fa': (
        (2.5137, 0.0, 0.0, 0.5064, 0.0, 0.9837, 0.0034),
        (0.3719, 0.714, 0.5355, 0.5064, 0.0, 0.9837, 0.0034),
    ),
    'mainline/output/nofa': (
        (0.0, 0.0, 0.0, 0.0, 0.0, 1.0442, 0.0),
        (0.0, 0.0, 0.0, 0.0, 0.0, 1.0442, 0.0),
    ),
    'seed-era/host/fa': (
        (0.0081, 0.0, 0.0, 0.0081, 0.0, 0.0, 0.129),
        (0.1482, 0.2844, 0.2133, 1.0054, 0.0, 0.0, 0.0041),
    ),
    'seed-era/host/nofa': (
        (1.9936, 0.0, 0.0, 0.0157, 0.1251, 0.0, 0.0),
        (0.2841, 0.5454, 0.409, 0.0001, 0.0, 0.0, 0.01),
    ),
    'seed-era/layers/fa': (
        (12.6667, 0.0, 0.0, 0.1867, 0.0, 0.0, 0.0),
        (0.8836, 0.0001, 3.5342, 0.5001, 0.0, 0.0, 0.0),
    ),
    'seed-era/layers/nofa': (
        (4.9999, 0.0, 0.0, 0.1386, 1.1086, 0.0, 0.0034),
        (2.1227, 3.7058, 3.5494, 0.0, 0.0, 0.0, 0.0),
    ),
    'seed-era/output/fa': (
        (1.0058, 0.0, 0.0, 0.0001, 0.0, 0.9999, 0.0058),
        (0.1488, 0.2857, 0.2143, 0.0001, 0.0, 0.9999, 0.0058),
    ),
    'seed-era/output/nofa': (
        (0.0076, 0.0, 0.0, 0.001, 0.0076, 0.9465, 0.2424),
        (0.4373, 0.84, 0.6293, 0.0, 0.0, 0.9844, 0.0),
    ),
}
#: the worst over-estimate of each rule on its data (relative; none is under)
OVER: dict[str, float] = {
    'ik/host/fa': 0.01,
    'ik/host/nofa': 0.005,
    'ik/layers/fa': 0.0868,
    'ik/layers/nofa': 0.0964,
    'ik/output/fa': 0.0,
    'ik/output/nofa': 0.0019,
    'mainline+pp/host/fa': 0.0115,
    'mainline+pp/host/nofa': 0.3038,
    'mainline+pp/layers/fa': 0.2022,
    'mainline+pp/layers/nofa': 0.1234,
    'mainline+pp/output/fa': 0.0252,
    'mainline+pp/output/nofa': 0.0287,
    'mainline/host/fa': 0.0343,
    'mainline/host/nofa': 0.0168,
    'mainline/layers/fa': 0.0114,
    'mainline/layers/nofa': 0.171,
    'mainline/output/fa': 0.0157,
    'mainline/output/nofa': 0.0359,
    'seed-era/host/fa': 0.0194,
    'seed-era/host/nofa': 0.0088,
    'seed-era/layers/fa': 0.0299,
    'seed-era/layers/nofa': 0.0888,
    'seed-era/output/fa': 0.0004,
    'seed-era/output/nofa': 0.0154,
}
#: the largest value of each feature in each rule's data (MiB of f32)
DOMAIN: dict[str, tuple[float, ...]] = {
    'ik/host/fa': (1.0, 3.0, 2.0, 1.0, 0.0, 0.0, 1.0),
    'ik/host/nofa': (1.0, 3.0, 2.0, 1.0, 8.0, 0.0, 1.0),
    'ik/layers/fa': (1.0, 3.0, 2.0, 1.0, 0.0, 0.0, 1.0),
    'ik/layers/nofa': (1.0, 3.0, 2.0, 1.0, 8.0, 0.0, 1.0),
    'ik/output/fa': (1.0, 3.0, 2.0, 1.0, 0.0, 62.5, 1.0),
    'ik/output/nofa': (1.0, 3.0, 2.0, 1.0, 8.0, 62.5, 1.0),
    'mainline+pp/host/fa': (1.0, 3.0, 2.0, 2.0, 0.0, 0.0, 1.0),
    'mainline+pp/host/nofa': (1.0, 3.0, 2.0, 1.0, 8.0, 0.0, 1.0),
    'mainline+pp/layers/fa': (1.0, 3.0, 2.0, 2.0, 0.0, 0.0, 1.0),
    'mainline+pp/layers/nofa': (1.0, 3.0, 2.0, 1.0, 8.0, 0.0, 1.0),
    'mainline+pp/output/fa': (1.0, 3.0, 2.0, 2.0, 0.0, 62.5, 1.0),
    'mainline+pp/output/nofa': (1.0, 3.0, 2.0, 1.0, 8.0, 62.5, 1.0),
    'mainline/host/fa': (1.0, 3.0, 2.0, 1.0, 0.0, 0.0, 1.0),
    'mainline/host/nofa': (1.0, 3.0, 2.0, 1.0, 8.0, 0.0, 1.0),
    'mainline/layers/fa': (1.0, 3.0, 2.0, 1.0, 0.0, 0.0, 1.0),
    'mainline/layers/nofa': (1.0, 3.0, 2.0, 1.0, 8.0, 0.0, 1.0),
    'mainline/output/fa': (1.0, 3.0, 2.0, 1.0, 0.0, 62.5, 1.0),
    'mainline/output/nofa': (1.0, 3.0, 2.0, 1.0, 8.0, 62.5, 1.0),
    'seed-era/host/fa': (1.0, 3.0, 2.0, 1.0, 0.0, 0.0, 1.0),
    'seed-era/host/nofa': (1.0, 3.0, 2.0, 1.0, 8.0, 0.0, 1.0),
    'seed-era/layers/fa': (1.0, 3.0, 2.0, 1.0, 0.0, 0.0, 1.0),
    'seed-era/layers/nofa': (1.0, 3.0, 2.0, 1.0, 8.0, 0.0, 1.0),
    'seed-era/output/fa': (1.0, 3.0, 2.0, 1.0, 0.0, 62.5, 1.0),
    'seed-era/output/nofa': (1.0, 3.0, 2.0, 1.0, 8.0, 62.5, 1.0),
}
