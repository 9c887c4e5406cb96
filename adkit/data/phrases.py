"""Phrase bank of the offline :class:`~adkit.data.writers.TemplateWriter` (docs/architecture.md §5).

The paper has a strong MLLM (GPT-4o) write the descriptions and conversations of
Anomaly-Instruct-125k. Offline we compose them from this bank instead: sentence frames with
slots, per-task synonyms, and per-*defect-family* appearance / cause / effect / prevention
phrases, so that hundreds of answers about the same defect all read differently.

Slots filled by the writer (see ``TemplateWriter``):

    {cat}         category in words ("capsule", "metal nut")
    {obj}         object noun phrase ("a capsule", or the sample's meta["hint"])
    {a_defect}    "a severe poke" (article + severity/extent + the defect's own name)
    {the_defect}  "the severe poke" (the same, definite)
    {where}       location phrase ("near the top left", "on its surface")
    {syn}         a synonym of the defect family ("puncture", "pit", ...)
    {cause} {effect} {prev}   family phrases (a second draw is {cause2}, {effect2}, {prev2})

Family banks: ``syn`` nouns; ``looks`` appearance sentences; ``cause`` noun phrases;
``effect`` clauses; ``prev`` gerund phrases. Defect names map to families by
``ALIASES`` (MVTec AD / VisA / synthetic names) and then by ``KEYWORDS``; anything else
uses ``generic``.
"""

from __future__ import annotations

FAMILIES: dict[str, dict[str, list[str]]] = {
    "scratch": {
        "syn": ["scratch", "scrape", "score mark", "abrasion line", "scuff"],
        "looks": ["The {syn} shows up as a thin line that catches the light differently from the rest of the {cat}.",
                  "It appears as a narrow, elongated mark cut into the surface finish.",
                  "Its edges are sharp and it runs in a roughly straight path across the material.",
                  "The {syn} breaks the otherwise uniform texture of the {cat}.",
                  "Along its length the surface looks slightly brighter, as if the top layer was removed.",
                  "The mark is shallow but clearly visible against the surrounding surface."],
        "cause": ["abrasive contact with tooling during handling", "parts rubbing against each other in transport",
                  "a sharp particle trapped between the {cat} and a fixture", "careless manual handling",
                  "worn or misaligned guide rails on the conveyor", "contact with a hard edge during packaging"],
        "effect": ["it spoils the surface finish and can be rejected by the customer on appearance alone",
                   "it can act as a starting point for corrosion or wear", "a deep enough scratch weakens a protective coating",
                   "it may hide finer defects and confuse later inspection steps",
                   "it lowers the perceived quality of the {cat}"],
        "prev": ["padding fixtures and grippers with soft material", "separating parts so they never rub against each other",
                 "inspecting and replacing worn guide rails regularly", "keeping work surfaces free of hard particles",
                 "training operators in careful handling", "adding protective film before transport"],
    },
    "crack": {
        "syn": ["crack", "fracture", "break", "split", "fissure"],
        "looks": ["The {syn} forms an irregular dark line where the material has separated.",
                  "Its path is jagged and branches slightly, typical of a brittle fracture.",
                  "Around the {syn} small fragments of material seem to be missing.",
                  "The edges of the {syn} do not line up perfectly, so the part has been stressed.",
                  "The break interrupts the continuous contour of the {cat}.",
                  "Light and shadow along the opening make the {syn} stand out clearly."],
        "cause": ["an impact during handling or transport", "thermal stress from uneven cooling",
                  "excessive force in a pressing or assembly step", "material fatigue from repeated loading",
                  "a drop onto a hard surface", "internal flaws in the raw material"],
        "effect": ["it compromises the structural integrity of the {cat}", "the {syn} can grow under load until the part fails",
                   "it can let liquids or dirt in and cause further damage", "the part may break completely in use",
                   "it is a safety risk for whoever handles the {cat}"],
        "prev": ["reducing drop heights and cushioning transfer points", "controlling heating and cooling rates",
                 "limiting press forces with calibrated equipment", "screening raw material for inclusions",
                 "using shock-absorbing packaging", "checking parts for stress before final assembly"],
    },
    "hole": {
        "syn": ["hole", "puncture", "perforation", "pit", "poke mark"],
        "looks": ["The {syn} is a small, roughly round opening where material is missing.",
                  "It appears as a dark spot with a sharp rim, deeper than the surrounding surface.",
                  "Around the {syn} the material is slightly pushed in.",
                  "Through the opening the background or the inside of the {cat} is visible.",
                  "The {syn} interrupts the smooth surface with a distinct depression.",
                  "Its outline is compact and well defined against the intact material."],
        "cause": ["a sharp object poking the surface", "a pointed tool slipping during assembly",
                  "a gas bubble bursting during moulding", "a foreign particle pressed into the material",
                  "mishandling with a pointed gripper", "local wear that went all the way through"],
        "effect": ["it can let air, moisture or contents leak", "it weakens the wall of the {cat} at that spot",
                   "the {cat} may no longer seal or hold its contents", "the defect can grow into a tear under stress",
                   "it makes the {cat} unusable for its intended purpose"],
        "prev": ["guarding sharp tools and edges near the line", "degassing the material before moulding",
                 "checking grippers for burrs and sharp points", "filtering out foreign particles",
                 "adding a leak or pressure test", "using softer handling equipment"],
    },
    "stain": {
        "syn": ["stain", "spot", "smear", "blotch", "discoloured patch"],
        "looks": ["The {syn} is a patch of different colour with soft, irregular edges.",
                  "It looks like a residue left on top of the surface rather than damage to it.",
                  "The {syn} is darker than the surrounding material and slightly glossy.",
                  "Its shape is uneven, as if a liquid spread and dried there.",
                  "The discolouration stands out against the uniform colour of the {cat}.",
                  "Inside the {syn} the texture of the {cat} is still visible under the colour change."],
        "cause": ["oil or lubricant dripping from machinery", "glue or sealant applied in the wrong place",
                  "a liquid spill on the line", "residue from a cleaning agent", "dirty gloves or tools touching the part",
                  "leaking packaging or containers nearby"],
        "effect": ["it makes the {cat} look dirty and unfit for sale", "the residue can attract dust and debris",
                   "it may interfere with coating, printing or bonding", "it can be a hygiene problem for the customer",
                   "the stained area may degrade the material over time"],
        "prev": ["maintaining seals and lubrication points to stop leaks", "calibrating glue dispensers",
                 "keeping gloves and tools clean", "rinsing off cleaning agents completely",
                 "covering parts near lubricated machinery", "cleaning the line at fixed intervals"],
    },
    "contamination": {
        "syn": ["contamination", "foreign particle", "foreign matter", "debris", "inclusion"],
        "looks": ["The {syn} is a small piece of material that does not belong to the {cat}.",
                  "It has a colour and texture that differ clearly from the surrounding surface.",
                  "The foreign material sits on or in the surface and casts a small shadow.",
                  "Its outline is irregular, like a fibre, a flake or a chip of another material.",
                  "The {syn} interrupts the clean appearance of the {cat}.",
                  "Up close the particle looks loose rather than part of the structure."],
        "cause": ["dust or fibres in the production environment", "metal chips from nearby machining",
                  "contaminated raw material", "debris falling from worn equipment",
                  "insufficient cleaning between batches", "open containers near the line"],
        "effect": ["it can contaminate the product or its contents", "it may cause malfunction if it gets into moving parts",
                   "it is a quality and hygiene concern", "customers will reject the {cat} as dirty or unsafe",
                   "it may damage the surface if it is pressed in later"],
        "prev": ["filtering air and keeping the area clean", "separating machining from assembly areas",
                 "inspecting incoming raw material", "covering parts and containers",
                 "cleaning equipment between batches", "adding an automatic particle inspection"],
    },
    "deformation": {
        "syn": ["deformation", "dent", "bend", "distortion", "warp"],
        "looks": ["The contour of the {cat} deviates from its intended shape at this spot.",
                  "The {syn} shows as a change in curvature with shading where the surface is pushed in.",
                  "Compared with a normal {cat}, this region is bent or squeezed out of shape.",
                  "Reflections on the surface are distorted around the {syn}.",
                  "The geometry is visibly asymmetric because of the {syn}.",
                  "Edges that should be straight are curved near the {syn}."],
        "cause": ["excessive pressure during assembly or packaging", "an impact that bent the material",
                  "uneven cooling after forming", "incorrect clamping in a fixture",
                  "stacking too many parts on top of each other", "a worn or misaligned forming tool"],
        "effect": ["the {cat} may no longer fit or assemble correctly", "it can affect the function of the {cat}",
                   "stress concentrates in the bent region", "it looks defective to the customer",
                   "mating parts may not seal or connect properly"],
        "prev": ["limiting clamping and pressing forces", "aligning and maintaining forming tools",
                 "controlling the cooling process", "using protective packaging against impacts",
                 "limiting stacking height in storage", "checking dimensions with gauges at each step"],
    },
    "cutpaste": {
        "syn": ["pasted patch", "out-of-place patch", "foreign patch", "copied region", "mismatched patch"],
        "looks": ["A rectangular region has a texture that does not match its surroundings.",
                  "The {syn} has sharp, straight borders that break the natural pattern of the {cat}.",
                  "Inside the patch the pattern is shifted or rotated relative to the rest of the {cat}.",
                  "Colour and structure change abruptly at the edges of the {syn}.",
                  "The region looks as if it was taken from another part and placed here.",
                  "The misaligned texture makes the {syn} stand out from the surface."],
        "cause": ["a synthetic cut-and-paste augmentation that copies a patch elsewhere",
                  "material from another area ending up in the wrong place",
                  "a layering or lamination fault", "a misregistration in a printing or weaving step",
                  "a repair with mismatched material", "a fault in the stitching of the surface"],
        "effect": ["it breaks the uniformity that inspection relies on", "the {cat} looks patched and defective",
                   "it may hide damage underneath", "the mismatched region can have different properties",
                   "it lowers the quality grade of the {cat}"],
        "prev": ["checking the registration of printing and weaving steps", "controlling lamination alignment",
                 "using matched material for repairs", "inspecting texture continuity automatically",
                 "calibrating cutting and placement tools", "documenting and auditing repairs"],
    },
    "perlin": {
        "syn": ["irregular blotch", "texture anomaly", "mottled region", "noisy patch", "irregular region"],
        "looks": ["The {syn} has smooth, cloud-like boundaries unlike any structure of the {cat}.",
                  "Inside it the texture of the {cat} is replaced by a foreign pattern.",
                  "The region blends gradually into the surroundings but its texture is clearly different.",
                  "Its organic, irregular outline follows no feature of the {cat}.",
                  "The {syn} looks like another material showing through the surface.",
                  "Colour and grain inside the {syn} do not match the rest of the surface."],
        "cause": ["a synthetic Perlin-noise augmentation blending a foreign texture into the image",
                  "uneven mixing of the raw material", "corrosion or chemical attack", "a coating that did not cure evenly",
                  "moisture absorbed unevenly by the material", "local overheating"],
        "effect": ["it changes the look and possibly the properties of the surface", "the affected area may wear faster",
                   "it signals a process that is out of control", "the {cat} fails the visual quality standard",
                   "it can mask other defects in the same region"],
        "prev": ["mixing raw materials thoroughly", "controlling temperature and curing time",
                 "protecting parts from moisture and chemicals", "monitoring the process with texture statistics",
                 "maintaining coating equipment", "sampling parts regularly for surface checks"],
    },
    "missing": {
        "syn": ["missing part", "absent component", "gap", "missing piece", "omission"],
        "looks": ["A component that every normal {cat} has is not present here.",
                  "Where the part should be there is an empty space that exposes what lies beneath.",
                  "The layout of the {cat} is incomplete because of the {syn}.",
                  "The missing element makes the {cat} look asymmetric.",
                  "The {syn} leaves a visible gap in the expected structure.",
                  "Compared with a normal {cat}, one element is clearly absent."],
        "cause": ["a feeder that failed to supply the component", "a skipped assembly step",
                  "the part falling off before fixing", "an empty magazine or hopper",
                  "a gripper that missed the part", "a part that was never attached properly"],
        "effect": ["the {cat} cannot work as intended", "it may fail functional tests or in service",
                   "the structure is weakened without the component", "the customer receives an incomplete product",
                   "it can lead to safety problems in use"],
        "prev": ["adding presence sensors at each assembly station", "monitoring feeders and hoppers",
                 "verifying each step with a checklist or vision check", "securing parts right after placement",
                 "maintaining grippers", "counting components at the end of the line"],
    },
    "misplaced": {
        "syn": ["misplacement", "misalignment", "wrong orientation", "swap", "offset"],
        "looks": ["A component sits in the wrong position or orientation compared with a normal {cat}.",
                  "The arrangement of parts does not follow the expected layout.",
                  "The {syn} makes the {cat} look asymmetric.",
                  "Elements that should align are visibly offset from each other.",
                  "The order or direction of the parts differs from the reference.",
                  "The {syn} is easy to see when compared with a correctly assembled {cat}."],
        "cause": ["a placement robot with a calibration error", "parts loaded in the wrong order",
                  "a fixture that does not hold parts in place", "manual assembly mistakes",
                  "parts shifting during transport", "a wrong setting after a product changeover"],
        "effect": ["the {cat} may not work or connect properly", "it can cause short circuits or wrong connections",
                   "mating parts will not fit", "the {cat} fails the assembly check",
                   "it may damage other components in use"],
        "prev": ["calibrating placement equipment regularly", "using poka-yoke fixtures that allow one orientation only",
                 "checking the setup after every changeover", "colour-coding parts",
                 "verifying position with a vision system", "securing parts during transport"],
    },
    "color": {
        "syn": ["discolouration", "colour deviation", "colour change", "tint", "off-colour area"],
        "looks": ["The colour in this region differs from the rest of the {cat}.",
                  "The {syn} has no change in texture, only in hue or brightness.",
                  "Its boundary is soft and the tone shifts gradually.",
                  "Compared with a normal {cat} this area is noticeably lighter or darker.",
                  "The {syn} stands out against the otherwise consistent colour.",
                  "The shape of the {syn} is irregular and follows no feature of the {cat}."],
        "cause": ["uneven dyeing or pigment mixing", "heat exposure that changed the colour",
                  "a chemical reaction with a cleaning agent", "UV exposure during storage",
                  "a wrong batch of material", "contamination in the pigment"],
        "effect": ["the {cat} no longer matches the colour specification", "customers perceive it as low quality",
                   "it can point to a material that has degraded", "it breaks the consistency between parts",
                   "it may hide other surface problems"],
        "prev": ["controlling pigment mixing and dosing", "limiting heat and UV exposure",
                 "checking colour against a reference at intake", "using compatible cleaning agents",
                 "storing parts away from light", "measuring colour with a spectrometer"],
    },
    "cut": {
        "syn": ["cut", "slit", "gash", "incision", "nick"],
        "looks": ["The {syn} is a clean, straight separation in the material.",
                  "Its edges are sharp and close together, as if made by a blade.",
                  "Through the {syn} inner layers of the {cat} are exposed.",
                  "The {syn} interrupts the continuous surface with a thin opening.",
                  "The material on both sides of the {syn} is otherwise intact.",
                  "The straight edges distinguish the {syn} from a tear or crack."],
        "cause": ["a blade or sharp edge touching the part", "a misadjusted cutting tool",
                  "a knife slipping during manual work", "sharp edges on a conveyor or fixture",
                  "a stripping tool set too deep", "contact with sheet-metal edges"],
        "effect": ["it exposes inner layers to damage and moisture", "it can cause electrical faults in insulation",
                   "the {cat} may tear further along the {syn}", "it weakens the material locally",
                   "it makes the {cat} unsafe to use"],
        "prev": ["deburring and guarding sharp edges", "adjusting cutting and stripping depths",
                 "using safety knives with limited depth", "inspecting tools for damage",
                 "training operators in tool handling", "adding an inline check for cuts"],
    },
    "print": {
        "syn": ["print defect", "faulty imprint", "misprint", "smudged print", "print error"],
        "looks": ["The printed marking is incomplete, blurred or misplaced.",
                  "Characters or symbols on the {cat} are partly missing or smeared.",
                  "The {syn} makes the marking hard to read.",
                  "The print is shifted relative to where it should be.",
                  "Ink is spread beyond the outline of the marking.",
                  "The contrast of the print is uneven across the {cat}."],
        "cause": ["a clogged or worn print head", "ink that was too thin or too thick",
                  "the part moving during printing", "a dirty printing pad or stamp",
                  "wrong registration of the printer", "insufficient drying time"],
        "effect": ["the marking may be unreadable for users or scanners", "it can cause mix-ups between products",
                   "it violates labelling requirements", "the {cat} looks poorly made",
                   "traceability information may be lost"],
        "prev": ["cleaning and maintaining print heads", "controlling ink viscosity",
                 "fixing parts firmly while printing", "checking registration regularly",
                 "allowing enough drying time", "verifying markings with a vision system"],
    },
    "generic": {
        "syn": ["defect", "anomaly", "irregularity", "flaw", "imperfection"],
        "looks": ["The affected region differs visibly from the rest of the {cat}.",
                  "Its appearance does not match what a normal {cat} looks like.",
                  "The {syn} interrupts the regular structure of the object.",
                  "Texture, shape or colour change abruptly at this spot.",
                  "The {syn} stands out when compared with a defect-free {cat}.",
                  "The irregular area is small compared with the whole {cat} but clearly noticeable."],
        "cause": ["a fault in the production process", "damage during handling or transport",
                  "a problem with the raw material", "worn or misadjusted equipment",
                  "an error in manual assembly", "unsuitable storage conditions"],
        "effect": ["it lowers the quality of the {cat}", "it may affect how the {cat} works",
                   "the {cat} may be rejected in quality control", "it can grow worse over time",
                   "customers may return the product"],
        "prev": ["monitoring the production process closely", "maintaining equipment on a schedule",
                 "inspecting incoming material", "handling parts with care",
                 "adding automated visual inspection", "training staff on quality standards"],
    },
}

#: defect names of MVTec AD, VisA, MVTec LOCO, BMAD and our synthesis → family
ALIASES: dict[str, str] = {
    "scratch": "scratch", "scratch_head": "scratch", "scratch_neck": "scratch", "abrasion": "scratch",
    "crack": "crack", "broken_large": "crack", "broken_small": "crack", "broken": "crack", "broken_teeth": "crack",
    "chip": "crack", "fracture": "crack", "damaged_case": "crack", "split_teeth": "crack",
    "hole": "hole", "poke": "hole", "poke_insulation": "hole", "puncture": "hole", "pit": "hole",
    "stain": "stain", "oil": "stain", "liquid": "stain", "glue": "stain", "glue_strip": "stain", "spot": "stain",
    "contamination": "contamination", "metal_contamination": "contamination", "thread": "contamination",
    "fabric_interior": "contamination", "foreign": "contamination", "dirt": "contamination",
    "deformation": "deformation", "bent": "deformation", "bent_wire": "deformation", "bent_lead": "deformation",
    "squeeze": "deformation", "squeezed_teeth": "deformation", "fold": "deformation", "gradient": "deformation",
    "rough": "deformation", "dent": "deformation",
    "cutpaste": "cutpaste", "cut_paste": "cutpaste", "fabric_border": "cutpaste", "manipulated_front": "cutpaste",
    "perlin": "perlin", "texture": "perlin", "corrosion": "perlin",
    "missing": "missing", "missing_cable": "missing", "missing_wire": "missing", "missing_rivet": "missing",
    "misplaced": "misplaced", "cable_swap": "misplaced", "flip": "misplaced", "rotation": "misplaced",
    "color": "color", "colour": "color", "discoloration": "color",
    "cut": "cut", "cut_lead": "cut", "cut_inner_insulation": "cut", "cut_outer_insulation": "cut",
    "faulty_imprint": "print", "print": "print", "misprint": "print",
}

#: fallback: a defect name containing this word belongs to the family
KEYWORDS: list[tuple[str, str]] = [
    ("scratch", "scratch"), ("crack", "crack"), ("break", "crack"), ("broken", "crack"), ("hole", "hole"),
    ("poke", "hole"), ("stain", "stain"), ("glue", "stain"), ("oil", "stain"), ("contam", "contamination"),
    ("bent", "deformation"), ("squeez", "deformation"), ("deform", "deformation"), ("missing", "missing"),
    ("swap", "misplaced"), ("misplac", "misplaced"), ("color", "color"), ("colour", "color"), ("cut", "cut"),
    ("print", "print"), ("perlin", "perlin"),
]

#: nicer wording of raw defect names in hints and answers ("bad" = VisA's unspecified defect)
DEFECT_WORDS: dict[str, str] = {
    "bad": "defect", "broken_large": "large break", "broken_small": "small break", "poke": "poke mark",
    "metal_contamination": "metal contamination", "faulty_imprint": "faulty imprint", "cutpaste": "pasted patch",
    "perlin": "irregular texture patch", "combined": "combination of defects", "good": "no defect",
}

SEVERITY_WORDS = ("minor", "moderate", "severe")  # a float severity in [0, 1] maps to thirds

# ------------------------------------------------------------------ task frames
DESCRIBE_OPEN = [
    "The image shows {obj} with {a_defect} {where}.", "This {cat} has {a_defect} {where}.",
    "Looking at the {cat}, {a_defect} is visible {where}.", "The {cat} in the image is defective: it has {a_defect} {where}.",
    "On the {cat}, {a_defect} can be seen {where}.", "On close inspection the {cat} shows {a_defect} {where}.",
    "The photo captures {obj} that carries {a_defect} {where}.", "A clear anomaly is present on the {cat}: {a_defect} {where}.",
    "The most noticeable problem with this {cat} is {a_defect} {where}.", "Inspecting the {cat} reveals {a_defect} {where}.",
]
DESCRIBE_MORE = [
    "Apart from this {syn}, the {cat} looks normal.", "The rest of the {cat} appears intact and consistent.",
    "No other irregularities are visible on the {cat}.", "The remaining surface matches a defect-free {cat}.",
    "This is the only region that deviates from the expected appearance.",
    "Everything outside the affected area looks as it should.", "Elsewhere the {cat} shows its normal structure.",
    "The {syn} is confined to a limited region of the object.",
]
CAUSE_OPEN = [
    "On this {cat}, {the_defect} {where} was most likely caused by {cause}.",
    "For this {cat}, a probable cause of {the_defect} {where} is {cause}.",
    "On the {cat}, {the_defect} {where} suggests {cause} during production.",
    "Such a defect on a {cat} typically comes from {cause}; here, {the_defect} sits {where}.",
    "The {cat} probably got {the_defect} {where} through {cause}.",
    "On a {cat}, {the_defect} seen {where} most often results from {cause}.",
]
CAUSE_MORE = ["Another possible source is {cause2}.", "It could also be due to {cause2}.",
              "{Cause2} is a less likely but possible explanation.", "One should also consider {cause2}.",
              "Alternatively, {cause2} may be responsible."]
EFFECT_OPEN = [
    "For the {cat}, {the_defect} {where} matters because {effect}.",
    "On this {cat}, {the_defect} {where} means that {effect}.",
    "With {the_defect} {where}, the {cat} has a problem: {effect}.",
    "For this {cat}, the consequence of {the_defect} {where} is that {effect}.",
    "Because this {cat} shows {a_defect} {where}, {effect}.",
    "Left as it is, {the_defect} {where} is a problem for the {cat}: {effect}.",
]
EFFECT_MORE = ["In addition, {effect2}.", "Moreover, {effect2}.", "It is also possible that {effect2}.",
               "Over time, {effect2}.", "Beyond that, {effect2}."]
PREV_OPEN = [
    "For the {cat}, preventing {the_defect} {where} starts with {prev}.",
    "To keep the {cat} free of defects like {the_defect} {where}, focus on {prev}.",
    "{Prev} is the main measure that keeps a {cat} from getting {a_defect} {where}.",
    "On the {cat}, defects such as {the_defect} {where} can be reduced by {prev}.",
    "The best protection of the {cat} against {a_defect} {where} is {prev}.",
    "To stop future {cat} parts from showing {a_defect} {where}, start with {prev}.",
]
PREV_MORE = ["{Prev2} would also help.", "It is also worth {prev2}.", "A second measure is {prev2}.",
             "In addition, consider {prev2}.", "{Prev2} further lowers the risk."]
#: a defect in several separate regions (``context["count"]`` > 1, from the mask's merged boxes)
COUNT_FRAMES = ["It is not a single spot: {n} separate areas of the {cat} are affected.",
                "The {syn} shows up in {n} separate places.", "In total, {n} distinct regions are affected.",
                "{N} separate regions of the surface carry it.", "The damage is split over {n} areas."]
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
CLOSERS = [
    "", "", "", "Catching it early keeps rework costs low.", "An automated visual inspection would flag it reliably.",
    "The part should be set aside for review.", "This is why the {cat} would fail quality control.",
    "A comparison with a reference {cat} makes the difference obvious.",
    "Such defects are worth tracking to find their root cause.",
]
WHERE_FRAMES = ["near the {loc}", "at the {loc}", "in the {loc} area", "toward the {loc}", "around the {loc}",
                "in the {loc} region"]
WHERE_UNKNOWN = ["on its surface", "on the surface", "on the visible surface", "on the outer surface"]
PREPOSITIONS = ("on ", "in ", "at ", "near ", "along ", "around ", "across ", "over ", "under ", "inside ",
                "by ", "toward", "close to ", "next to ", "between ")

NORMAL_OPEN = [
    "The image shows {obj} without any visible defect.", "This {cat} looks normal and intact.",
    "The {cat} in the image appears to be in good condition.", "Nothing unusual can be seen on this {cat}.",
    "The photo shows a defect-free {cat}.", "This is a normal {cat} with a regular appearance.",
    "The {cat} matches what a good part should look like.", "No anomaly is visible on the {cat}.",
]
NORMAL_MORE = [
    "Its surface is uniform, with consistent colour and texture.", "The shape is regular and symmetric.",
    "There are no scratches, cracks, stains or foreign particles.", "All edges and contours look clean.",
    "The texture is even across the whole object.", "No parts are missing or out of place.",
    "The lighting reveals no dents or deformations.", "Colour and finish are consistent everywhere.",
    "The structure is complete and well aligned.", "There is no sign of wear or contamination.",
]
NORMAL_CLOSERS = [
    "", "", "It would pass a visual quality check.", "It can serve as a reference for a defect-free {cat}.",
    "No rework is needed.", "It is ready for the next production step.", "Nothing here calls for a closer look.",
]
CHECK_OPEN = [
    "When inspecting a {cat} like this, check {check} and {check2}.",
    "For a {cat}, the key points to inspect are {check} and {check2}.",
    "Even though this {cat} is fine, an inspector should look at {check} and {check2}.",
    "Typical checks for a {cat} include {check} as well as {check2}.",
    "To confirm that the {cat} is good, examine {check} and {check2}.",
]
CHECKS = [
    "the surface for scratches and dents", "the edges for chips or cracks", "the colour for stains or discolouration",
    "the shape against a reference part", "the presence of every component", "the alignment of its parts",
    "the texture for irregular patches", "the surface for foreign particles or dirt",
    "any printing or markings for legibility", "the walls for holes or punctures", "the joints and seams",
    "the contact areas for signs of wear",
]

# ------------------------------------------------------------------ user questions
DETECT_QUESTIONS = [
    "Are there any defects for the object in the image? Please reply with 'Yes' or 'No'.",
    "Is there any anomaly in the image? Answer with 'Yes' or 'No'.",
    "Does the {cat} in the image have a defect? Please answer 'Yes' or 'No'.",
    "Is this {cat} defective? Reply with one word: 'Yes' or 'No'.",
    "Do you see any anomaly on the object? Please answer with 'Yes' or 'No' only.",
    "Does this image show a defective {cat}? Answer 'Yes' or 'No'.",
]
QUESTIONS: dict[str, list[str]] = {
    "describe": ["Describe the anomaly in the image.", "What is wrong with this {cat}? Describe it in detail.",
                 "Can you describe the defect you see?", "Where is the defect and what does it look like?",
                 "Please describe the anomaly on the {cat} in detail.", "What kind of defect is it, and where is it?"],
    "cause": ["What could have caused this anomaly?", "What is the likely cause of this defect?",
              "How could this defect have happened?", "Why does the {cat} have this defect?",
              "What might be the reason for this anomaly?"],
    "effect": ["What effect could this anomaly have?", "How might this defect affect the {cat}?",
               "What are the consequences of this defect?", "Why does this defect matter?",
               "What problems could this anomaly cause?"],
    "prevention": ["How can this kind of anomaly be prevented?", "What could be done to avoid this defect?",
                   "How would you prevent this defect in production?", "What measures prevent such anomalies?",
                   "How can defects like this be avoided in the future?"],
    "normal_description": ["Describe the object in the image.", "What does this {cat} look like?",
                           "Please describe the {cat} in detail.", "Can you describe the condition of the {cat}?",
                           "How would you describe this object?"],
    "check": ["What should an inspector check on this kind of object?", "What defects should one look for on a {cat}?",
              "Which parts of a {cat} are worth inspecting?", "How would you inspect a {cat} like this one?"],
}
