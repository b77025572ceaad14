/**
 * Lowercase English words of 4–9 letters, for the keys of LongEval "lines" records (`line <word>-<word>`).
 * fixtures/README.md: any such words work, and the prompts it measured draw keys from a large vocabulary, so
 * a word practically never appears in two keys of one prompt (its reference prompts: 179 distinct words in 92
 * keys). A prompt here takes its words without replacement (prompts.ts), so this list must hold at least two
 * words per record of the longest prompt: 1452 words cover 726 records (about 15k tokens at ~21 tokens a
 * record); longer prompts reuse words, as few times each as the length allows. A word shared between keys is a distractor the task is not about: with the earlier 314-word
 * list drawn with replacement, every wrong answer of dense moa-tiny at 4k was the value of another key with the
 * same first word.
 */
export const KEY_WORDS: readonly string[] = (
  "abacus abbey ability absent absorb abstract academy accent account acid acorn acoustic acre action active " +
  "actor adapter address adjust admiral adult advance adverb advice aerial aerosol affair afford agency agenda " +
  "agent airport aisle alarm album alcove algebra alien alley alloy almanac almond alpaca alpine altar amateur " +
  "amber ambush amulet analyst anatomy anchor ancient angel angle animal ankle annex answer antelope antenna " +
  "anthem antique anvil apple apricot apron aquarium arcade arch archer archive arctic arena argument armchair " +
  "armor aroma arrange array arrival arrow artery artist ashtray aspect asphalt assert asset athlete atlas " +
  "attempt attic attire auction auditor aurora author autumn avenue average avocado awning axle backlog backpack " +
  "bacon badge badger bagel baker bakery balance balcony ballad ballet balloon bamboo bandage bandit banjo banner " +
  "banquet barber bargain barley barn baron barrel barrier basin basket bassoon batch bath baton battery bayou " +
  "bazaar beach beacon beard beast beaver bedroom beech beehive beetle before beggar belfry bell belt bench " +
  "benefit berry bicycle bill binary binder bingo biology birch bird biscuit bishop bison blade blanket blazer " +
  "blender blimp blizzard blossom blouse blueprint boat bobcat body bolt bonfire bonnet bonus booklet boolean " +
  "boot border bottle boulder bounce bouquet boutique bowl boxer bracelet bracket brain branch brand brass bread " +
  "breadth breakfast breeze brew brick bride bridge brine broccoli brooch brook broom brother brush bubble bucket " +
  "budget buffalo buffer bugle builder bulb bullet bulletin bumper bundle bunker bureau burger burrow bush butane " +
  "butcher butter button buzzard cabin cabinet cable cactus cadence cafe cake calendar callback camel camera camp " +
  "canal canary candle cannon canoe canopy canvas canyon cape captain capture caravan carbon cardigan cargo " +
  "carnival carol carpet carrot cartoon carving cascade casino cassette castle catalog catfish cattle cavern " +
  "cedar cellar cello cement census ceramic chair chalet chalk chamber champion channel chapel chapter charcoal " +
  "chariot charm chart checksum chef cherry chess chest chicken chief child chimney chisel choir chorus chowder " +
  "cider cigar cinder cinema cipher circle circus citizen citrus city clam clamp clarinet classic clay clever " +
  "client cliff climate clinic cloak clock closet cloud clover cluster coach coastal coat cobalt cobble cobra " +
  "cockpit coconut codec coffee collar colony column comedy comet comic commit compass compile concert concrete " +
  "condor cone console context convoy cookie copper coral corridor cotton counter country courage cousin cover " +
  "coyote crab cradle craft crane crater crayon cream credit creek crest crew crib cricket crimson crow crown " +
  "cruise crumb crust crystal cube cucumber culture cupboard cupcake curry cursor curtain cushion custard cutlery " +
  "cyclone cymbal dagger dairy daisy damper dance dancer dataset dawn deadline debate decade decimal deck decoder " +
  "decoy deer default delight delta denim dentist deploy depot derby derive desert design dessert detail detour " +
  "device diagram dial diamond diary diesel digest dimple diner dinghy dingo dinner diploma dish disk display " +
  "ditch divider dock docket doctor doll dolphin domain dome domino donkey door dough dove dragon dragonfly drama " +
  "drawer dream dress drill drizzle drum duck duffel dugout dumpling dune dust duvet dwarf dynamo eagle earth " +
  "easel easter echo eclipse edge editor eggplant elbow elder element elephant elevator embassy ember emblem " +
  "emerald empire encode endpoint energy engine engrave envelope enzyme episode epoch equator eraser errand " +
  "escape essay estuary evening event exhibit export eyelash fable fabric face factor factory fairy falcon falls " +
  "family fang farm farmer fathom fawn feast feather fence fern ferret ferry festival fetch fever fiber fiddle " +
  "field fight figure film filter finale finch finger fire fish fixture flag flame flannel flask fleet flint " +
  "float flower flute foam folder folk fool foot forest forge fork format fort fortune fossil fountain fraction " +
  "fragment frame freedom freight friend fringe frog frontier frost fruit fudge fuel funnel furnace gable gadget " +
  "gala galaxy gallery galley game gander garage garden garlic garment garnet gate gateway gauge gazebo gazelle " +
  "gecko generic genie gentle geyser ghost giant gift gill gimbal ginger glacier glade glass glimmer glove glue " +
  "goat goblet golden goose gorilla gossip gourd gown gradient grain granite granola granule grape graph graphite " +
  "grass gravel gravity gravy griddle grill grocer grove guard guest guild guitar gull gully gust gutter habitat " +
  "hail hair halibut hall halo hamlet hammer hamster hand handler hangar harbor harness harp harvest hatchet hawk " +
  "hazard hazel headband header hearth heater hedge heel helmet hermit hero heron hexagon hiker hill hinge hippo " +
  "history hive hockey hollow honey hood hook horizon horn horse hose hosting hotel hound house hull hunter husk " +
  "hydrant hymn iceberg icicle idiom igloo import index indigo infant inkwell inlet insect insert integer " +
  "inventor iris iron island itch iterate ivory jacket jaguar jasmine jasper javelin jeep jelly jersey jester " +
  "jewel jigsaw jockey joke journal journey judge juice jumper jungle juniper jury kale kangaroo kayak kebab keel " +
  "kennel kernel kerosene kettle keyboard keystone kidney kiln kilt kingdom kiosk kitchen kitten kiwi knapsack " +
  "knee knife knight knob knot koala label lace ladder lagoon lake lamb lambda lamp lane lantern lapel laptop " +
  "larch lark lasso latch lattice lava lawn leader leaf ledger leek legend lemon lemonade length lens leopard " +
  "letter lettuce lever liberty library lichen lilac lily lime limit limousine linen lines lion lipstick literal " +
  "lizard lobby lobster locker locket lodge loft logbook lookup lotus lounge lumber lumen lunch lute lynx lyric " +
  "machine mackerel magnet magnolia magpie maid mailbox mallet mammal manatee mandolin mango mansion mantle maple " +
  "mapping marble marina market marrow marsh mask mason mast matrix mattress mayor maze meadow meal medal median " +
  "melody melon memory mentor menu merchant mermaid mesa metal meteor method midnight migrate mill mime mineral " +
  "minnow mint mirror mission mist mitten moat module mole monk monkey monsoon moon moose morning mortar mosaic " +
  "moth motor mound mountain mouse mouth muffin mule mural museum mushroom musket mussel mustard nail nanny " +
  "napkin nature nebula nectar needle nest nettle network newt niche nickel night nimbus noble noodle noon nose " +
  "notebook novel nozzle number nurse nutmeg nutshell nylon oasis oatmeal object oboe ocean octave octopus office " +
  "offset olive omelet onion opcode opera opinion orange orbit orca orchard orchid organ ostrich otter outline " +
  "outpost output oven overlay oxcart oxygen oyster packet paddle paddock pagoda pail paint pajamas palace pallet " +
  "palm pamphlet pancake panda panel panther pantry papaya paper parade parcel parka parlor parrot parser parsley " +
  "pasta pastel pasture patio pattern payload peach peacock peanut pearl pebble pedal pelican pencil pendant " +
  "penguin penny pepper perch perfume period pestle petal pewter pheasant piano pickle picture pier pigeon " +
  "pigment pike pilgrim pillow pilot pine pinnacle pinwheel pioneer pipeline pirate pistachio pistol pitcher " +
  "pixel pizza planet plank plaster plate plaza plinth plum plume pocket poem poet poetry pointer polka polygon " +
  "pond pony poodle poplar porch porridge portal possum postage poster potato pottery pouch powder prairie prefix " +
  "prince printer prism prison probe process profile prompt propane prophet protocol pudding puffin pulley pulpit " +
  "pumpkin puppet puppy purse puzzle pylon pyramid quail quarry quarter quartz query quest quill quilt quiver " +
  "rabbit racket radar radio radish raft rafter railing rainbow raisin rake ranch random ranger raspberry ratchet " +
  "rattle raven razor reactor record reducer reef refrain region reindeer relay relic remote render reptile " +
  "request resin result rhino ribbon rice riddle ridge ring rink river rivet robe robin rocket rodeo roof rooster " +
  "root rope rose router rover rubber rubric ruby rudder ruler runtime sack saddle safari saffron saga sage sail " +
  "salad salmon salt sample sand sandal sapphire sardine satchel satellite sauce sausage scalar scanner scarf " +
  "scarlet schema scholar scooter script scroll seal seashell season sector segment sensor sequence sequin server " +
  "shadow sheep shelf shelter shield shirt shoe shovel shrimp shrub shuttle sickle signal silica silver singer " +
  "siren skate sketch skunk sled sleeve slipper sloth snail snake sneaker socket sofa soldier solvent sonnet soup " +
  "spade sparrow spatula spear spice spider spinach spindle spiral spirit sponge spoon sprocket spruce squash " +
  "squid stable stag stair stapler star station statue steak steam stencil stone stool storage stork storm stove " +
  "straw stream street string studio sugar summit sunbeam sunflower sunset swallow swamp swan sweater switch " +
  "symbol syntax syrup table tablet tack taco tail tailor tangent tank tapestry tavern taxi teacher teapot " +
  "template temple tension tent termite terrace thimble thistle thorn thread throne thunder ticket tide tiger " +
  "tile timber toad toast toffee toggle token tomato tomb tongue tooth topaz torch tornado toucan towel tower " +
  "tractor trail train tray tree trellis tribe trigger trophy trout truck trumpet trunk tuba tulip tundra tunnel " +
  "tuple turbine turkey turnip turtle tutor tweezers twig umbrella unicorn uniform update upload urchin utensil " +
  "vacuum valley vapor vase vault vector velvet vendor venture verbose version vessel vest viaduct viking village " +
  "vine vinegar vintage violin viper visor volcano voltage voyage vulture waffle wagon waiter walnut walrus wand " +
  "warden wardrobe warrior wasp watch wave weasel weather webhook whale wheat wheel whisk whisker whistle wick " +
  "widget widow willow wind window wing winter wizard wolf wombat wonder woodland wool worm wrapper wreath wren " +
  "yacht yard yarn yarrow yellow yeti yogurt yolk zebra zenith zephyr zipper zone zucchini"
).split(" ");
