"""MTIL's data, as ZSCL's code has it: task names, the two task orders, prompt templates, fixed class lists.

A data-only leaf module (no imports), so params validation and tests read it without torchvision. Source:
ZSCL (Zheng et al., ICCV 2023), github.com/Thunderbeee/ZSCL at b96e714, files mtil/src/datasets/collections.py
(every data set's class handling and templates) and mtil/src/datasets/cifar10.py (CIFAR100's templates),
mtil/scripts/ZSCL.sh (order I) and mtil/scripts/ZSCL_minus.sh (order II). Strings are copied as they are;
ZSCL's ``lambda c: f"...{c}..."`` templates are written with ``{}`` for the class text, as every template here.

Class names: ZSCL fixes the lists of Caltech101, EuroSAT and Flowers (below, in the label order of
torchvision's data sets); for the other eight it takes the torchvision data set's own ``classes`` with ``_``
turned into spaces (``pipeline/data/mtil.py`` does the same), so those names come with the data.
ZSCL trains with each data set's first template and evaluates with all of them (its ``template`` property
and ``zeroshot_classifier``); the order of every list is ZSCL's, so the first is its training template.
"""
from __future__ import annotations

# Order I: alphabetical, the order of ZSCL's main results (mtil/scripts/ZSCL.sh).
ORDER_I = ["Aircraft", "Caltech101", "CIFAR100", "DTD", "EuroSAT", "Flowers", "Food", "MNIST", "OxfordPet",
           "StanfordCars", "SUN397"]
# Order II: ZSCL's second order (mtil/scripts/ZSCL_minus.sh, ZSCL_minus_WC_WiSE.sh).
ORDER_II = ["StanfordCars", "Food", "MNIST", "OxfordPet", "Flowers", "SUN397", "Aircraft", "Caltech101", "DTD",
            "EuroSAT", "CIFAR100"]
ORDERS = {"I": ORDER_I, "II": ORDER_II}

TEMPLATES: dict[str, list[str]] = {
    "Aircraft": [
        "a photo of a {}, a type of aircraft.", "a photo of the {}, a type of aircraft.",
    ],
    "Caltech101": [
        "a photo of a {}.", "a painting of a {}.", "a plastic {}.", "a sculpture of a {}.", "a sketch of a {}.",
        "a tattoo of a {}.", "a toy {}.", "a rendition of a {}.", "a embroidered {}.", "a cartoon {}.",
        "a {} in a video game.", "a plushie {}.", "a origami {}.", "art of a {}.", "graffiti of a {}.",
        "a drawing of a {}.", "a doodle of a {}.", "a photo of the {}.", "a painting of the {}.",
        "the plastic {}.", "a sculpture of the {}.", "a sketch of the {}.", "a tattoo of the {}.", "the toy {}.",
        "a rendition of the {}.", "the embroidered {}.", "the cartoon {}.", "the {} in a video game.",
        "the plushie {}.", "the origami {}.", "art of the {}.", "graffiti of the {}.", "a drawing of the {}.",
        "a doodle of the {}.",
    ],
    "CIFAR100": [
        "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.",
        "a low contrast photo of a {}.", "a high contrast photo of a {}.", "a bad photo of a {}.",
        "a good photo of a {}.", "a photo of a small {}.", "a photo of a big {}.", "a photo of the {}.",
        "a blurry photo of the {}.", "a black and white photo of the {}.", "a low contrast photo of the {}.",
        "a high contrast photo of the {}.", "a bad photo of the {}.", "a good photo of the {}.",
        "a photo of the small {}.", "a photo of the big {}.",
    ],
    "DTD": [
        "a photo of a {} texture.", "a photo of a {} pattern.", "a photo of a {} thing.",
        "a photo of a {} object.", "a photo of the {} texture.", "a photo of the {} pattern.",
        "a photo of the {} thing.", "a photo of the {} object.",
    ],
    "EuroSAT": [
        "a centered satellite photo of {}.", "a centered satellite photo of a {}.",
        "a centered satellite photo of the {}.",
    ],
    "Flowers": [
        "a photo of a {}, a type of flower.",
    ],
    "Food": [
        "a photo of a {}, a type of food.",
    ],
    "MNIST": [
        'a photo of the number: "{}".',
    ],
    "OxfordPet": [
        "a photo of a {}, a type of pet.",
    ],
    "StanfordCars": [
        "a photo of a {}, a type of car.", "a photo of a {}.", "a photo of the {}.", "a photo of my {}.",
        "i love my {}!", "a photo of my dirty {}.", "a photo of my clean {}.", "a photo of my new {}.",
        "a photo of my old {}.",
    ],
    "SUN397": [
        "a photo of a {}.", "a photo of the {}.",
    ],
}

# Caltech101: label order of torchvision's sorted category folders, BACKGROUND_Google left out (Faces,
# Faces_easy, Leopards, Motorbikes, accordion, ...). "head of a  crocodile" keeps ZSCL's double space: CLIP's
# tokenizer collapses whitespace, so the prompt's tokens are those of a single space.
CALTECH101_CLASSES = [
    "off-center face", "centered face", "leopard", "motorbike", "accordion", "airplane", "anchor", "ant", "barrel",
    "bass", "beaver", "binocular", "bonsai", "brain", "brontosaurus", "buddha", "butterfly", "camera", "cannon",
    "side of a car", "ceiling fan", "cellphone", "chair", "chandelier", "body of a cougar cat",
    "face of a cougar cat", "crab", "crayfish", "crocodile", "head of a  crocodile", "cup", "dalmatian",
    "dollar bill", "dolphin", "dragonfly", "electric guitar", "elephant", "emu", "euphonium", "ewer", "ferry",
    "flamingo", "head of a flamingo", "garfield", "gerenuk", "gramophone", "grand piano", "hawksbill", "headphone",
    "hedgehog", "helicopter", "ibis", "inline skate", "joshua tree", "kangaroo", "ketch", "lamp", "laptop",
    "llama", "lobster", "lotus", "mandolin", "mayfly", "menorah", "metronome", "minaret", "nautilus", "octopus",
    "okapi", "pagoda", "panda", "pigeon", "pizza", "platypus", "pyramid", "revolver", "rhino", "rooster",
    "saxophone", "schooner", "scissors", "scorpion", "sea horse", "snoopy (cartoon beagle)", "soccer ball",
    "stapler", "starfish", "stegosaurus", "stop sign", "strawberry", "sunflower", "tick", "trilobite", "umbrella",
    "watch", "water lilly", "wheelchair", "wild cat", "windsor chair", "wrench", "yin and yang symbol",
]

# EuroSAT: label order of torchvision's sorted class folders (AnnualCrop, Forest, HerbaceousVegetation, Highway,
# Industrial, Pasture, PermanentCrop, Residential, River, SeaLake).
EUROSAT_CLASSES = [
    "annual crop land", "forest", "brushland or shrubland", "highway or road",
    "industrial buildings or commercial buildings", "pasture land", "permanent crop land",
    "residential buildings or homes or apartments", "river", "lake or sea",
]

# Flowers: the label order of imagelabels.mat (1..102). torchvision 0.29's own Flowers102.classes differs in one
# name ("pink-yellow dahlia?"), so ZSCL's list is kept here.
FLOWERS_CLASSES = [
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
    "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon", "colt's foot",
    "king protea", "spear thistle", "yellow iris", "globe-flower", "purple coneflower", "peruvian lily",
    "balloon flower", "giant white arum lily", "fire lily", "pincushion flower", "fritillary", "red ginger",
    "grape hyacinth", "corn poppy", "prince of wales feathers", "stemless gentian", "artichoke", "sweet william",
    "carnation", "garden phlox", "love in the mist", "mexican aster", "alpine sea holly", "ruby-lipped cattleya",
    "cape flower", "great masterwort", "siam tulip", "lenten rose", "barbeton daisy", "daffodil", "sword lily",
    "poinsettia", "bolero deep blue", "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion",
    "petunia", "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura", "geranium",
    "orange dahlia", "pink-yellow dahlia", "cautleya spicata", "japanese anemone", "black-eyed susan",
    "silverbush", "californian poppy", "osteospermum", "spring crocus", "bearded iris", "windflower", "tree poppy",
    "gazania", "azalea", "water lily", "rose", "thorn apple", "morning glory", "passion flower", "lotus",
    "toad lily", "anthurium", "frangipani", "clematis", "hibiscus", "columbine", "desert-rose", "tree mallow",
    "magnolia", "cyclamen", "watercress", "canna lily", "hippeastrum", "bee balm", "ball moss", "foxglove",
    "bougainvillea", "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower", "trumpet creeper",
    "blackberry lily",
]

# ZSCL's fixed class lists by task; every other task's class names come from its data set.
FIXED_CLASSES = {"Caltech101": CALTECH101_CLASSES, "EuroSAT": EUROSAT_CLASSES, "Flowers": FLOWERS_CLASSES}
