/**
 * Lowercase words of 4–9 letters for the keys of LongEval "lines" records (`line <word>-<word>`); fixtures/README.md:
 * any such words work. Common English words and programming terms, so keys tokenize like ordinary text, with a
 * spread of token counts that lets a record grow or shrink by one token when a sample is fitted to its length.
 */
export const KEY_WORDS: readonly string[] = (
  "abacus abstract account acorn action adapter address adjust advance aerial agenda alloy alpine anchor " +
  "ancient antenna apricot archive argument arrange array assert asset attempt auction author average " +
  "awning backlog balloon bandit barley barrier batch beetle before belfry benefit binary biscuit blender " +
  "blueprint bonnet boolean border bounce branch breadth brick buffer bulletin burrow butane cable cadence " +
  "calendar callback candle canopy canvas capture cargo carnival cascade catalog cedar census ceramic " +
  "chamber charcoal checksum chorus cinder cipher citrus clamp classic client clover cluster coastal cobble " +
  "codec column commit compile concert console context copper corridor counter cover crane credit crimson " +
  "cursor cutlery dagger dairy damper dataset deadline decimal decoder default delta denim deploy depot " +
  "derive detail device diagram digest dinghy diploma display divider docket domino drizzle dune dynamo " +
  "easel ember emerald encode endpoint engrave enzyme epoch equator estuary event exhibit export fabric " +
  "factor falcon fathom ferry fetch fiddle figure finch fixture flannel fleet float folder forge format " +
  "fossil fraction freight fringe frontier funnel gadget gallery garnet gateway gauge gazebo generic " +
  "geyser gimbal glacier gradient granule graphite gravel grove guild gutter habitat halibut handler " +
  "harbor harness hatchet hazel header heron hexagon hinge hosting hydrant iceberg idiom import index " +
  "indigo inkwell insert integer iterate jasper javelin jigsaw journal juniper kayak keyboard keystone " +
  "kiln kiosk knapsack label lagoon lambda lattice ledger legend lemonade length lichen limit linen " +
  "literal locker logbook lookup lumen lyric magnolia mallet mantle mapping marina marrow matrix meadow " +
  "median merchant method midnight migrate mineral mitten module monsoon mortar mosaic mussel mustard " +
  "nebula nectar needle nickel nimbus nozzle nutmeg object octave offset omelet opcode opinion orbit " +
  "orchid outline output overlay oxygen packet paddock pallet pamphlet panel parcel parser pastel pattern " +
  "payload pebble pelican pendant pepper period pewter pickle pigment pilgrim pinnacle pipeline pistachio " +
  "pixel plaza plinth pointer polygon poplar portal postage pottery prefix printer probe process profile " +
  "prompt propane protocol pulley pumpkin pylon quarter quartz query quiver radish raft rafter railing " +
  "random ranger ratchet reactor record reducer refrain region relay remote render reptile request " +
  "resin result ribbon ridge rivet rocket router rubric runtime saddle saffron salmon sample sandal " +
  "satchel scalar scanner schema scooter script sector segment sensor sequence server shadow shelter " +
  "shuttle signal silica sketch slipper socket solvent sonnet spindle spiral sprocket squash stencil " +
  "storage stream string summit sunbeam switch symbol syntax tablet tangent tapestry teapot template " +
  "tension terrace thimble thistle thread thunder ticket timber toggle token topaz tractor trellis trigger " +
  "trumpet tulip tundra turbine tuple turnip tweezers uniform update upload utensil vacuum valley vector " +
  "velvet venture verbose version vessel viaduct vintage violin voltage voyage waffle walnut warden " +
  "webhook whisker widget willow window wizard woodland wrapper yarrow yogurt zenith zephyr zipper"
).split(" ");
