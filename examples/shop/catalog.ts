/** The small catalog the shop seeds on first start: prices in cents. */
export const CATALOG = [
  { id: 'green-tea', name: 'Green tea, 100 g', price: 450, stock: 1000 },
  { id: 'coffee-beans', name: 'Coffee beans, 250 g', price: 1290, stock: 1000 },
  { id: 'ceramic-mug', name: 'Ceramic mug', price: 990, stock: 200 },
  { id: 'french-press', name: 'French press', price: 3490, stock: 50 },
  { id: 'copper-kettle', name: 'Copper kettle (limited)', price: 8900, stock: 3 },
] as const;
